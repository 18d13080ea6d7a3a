"""``fabric dashboard``: a live terminal view of a broker (model, navigation, views, key input)."""
