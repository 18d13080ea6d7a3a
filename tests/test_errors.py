"""The typed exceptions of fabric/protocol/errors.py: one written-out class per table row, and
no class without a row."""

from __future__ import annotations

import ast
import inspect

import pytest

import fabric.errors
from fabric.protocol import errors
from fabric.protocol.errors import ALL_ERRORS, EXCEPTIONS, FabricError, _class_name, exception_for


def test_every_error_code_has_its_class():
    missing = [e.name for e in ALL_ERRORS if e.name not in EXCEPTIONS]
    assert not missing, "; ".join(
        f"add a class for {name}: `class {_class_name(name)}(FabricError)` with error_name = {name!r}, "
        f"and list it in _CLASSES" for name in missing)


def test_every_class_has_its_error_code_name_and_doc():
    by_name = {e.name: e for e in ALL_ERRORS}
    for name, cls in EXCEPTIONS.items():
        assert name in by_name, f"{cls.__name__} stands for {name}, which is not in _TABLE"
        assert cls.error_name == name and cls.__name__ == _class_name(name), cls
        assert issubclass(cls, FabricError) and cls.__module__ == errors.__name__
        doc = " ".join((cls.__doc__ or "").split())
        assert doc == by_name[name].meaning, f"{cls.__name__}'s docstring differs from the table"
        assert getattr(errors, cls.__name__) is cls
        assert getattr(fabric.errors, cls.__name__) is cls  # `from fabric.errors import ...` still works
    assert len(set(EXCEPTIONS.values())) == len(EXCEPTIONS)


def test_classes_are_written_out_not_generated():
    """Readers and type checkers see each class: a ``class`` statement per code in the source."""
    tree = ast.parse(inspect.getsource(errors))
    defined = {n.name for n in tree.body if isinstance(n, ast.ClassDef)}
    assert {cls.__name__ for cls in EXCEPTIONS.values()} <= defined
    assert "globals()" not in inspect.getsource(errors)


@pytest.mark.parametrize("error", ALL_ERRORS, ids=lambda e: e.name)
def test_a_reply_error_becomes_its_typed_exception(error):
    exc = exception_for({"code": error.code, "name": error.name, "message": "why"})
    assert type(exc) is EXCEPTIONS[error.name] and exc.code == error.code and exc.message == "why"
    assert isinstance(exc, FabricError) and exc.retriable == error.retriable


def test_unknown_codes_still_make_an_exception():
    exc = exception_for({"code": 9999, "name": "FROM_THE_FUTURE", "message": "m"})
    assert type(exc) is errors.UnknownErrorError and "9999" in exc.message
