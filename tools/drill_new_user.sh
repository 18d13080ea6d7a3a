#!/bin/bash
# Issue 16's "as a new user" drill, with the README's commands (`fabric` on PATH, default ports
# 7171-7174 and 7271-7274 free):
#   bash tools/drill_new_user.sh [WORKDIR]      (default /tmp/fabric-drill; it is emptied first)
# A 3-broker `fabric cluster up`, a keyed acks=all load from the default producer (every
# acknowledgement logged), a 4th broker started from a copy of broker-1.yaml, `fabric reassign
# --generate` + execute with a throttle, a partition leader SIGKILLed and restarted, broker 1
# decommissioned and stopped, another leader SIGKILLed and restarted, preferred leaders restored;
# then `fabric cluster status`, and tools/cluster_check.py judges every replica's files against
# the acknowledgements (lost / reordered / divergent / duplicate must all be 0; exit status 1 if not).
set -u
REPO=$(cd "$(dirname "$0")/.." && pwd)
W=${1:-/tmp/fabric-drill}; rm -rf $W; mkdir -p $W; cd $W
B=127.0.0.1:7171,127.0.0.1:7172,127.0.0.1:7173
fabric cluster up --data-dir $W/fabric-cluster | tee up.txt
fabric cluster status | head -5
fabric topic create orders --partitions 3 -b 127.0.0.1:7171
# keyed events with the default producer, every acknowledgement logged
(cd $REPO && python -m tools.bench.launch tools.bench.failover_load --bootstrap $B --topic orders --rate 1500 --ack-log $W/acks.jsonl --stop-file $W/stop > $W/load.out 2>&1 &)
sleep 3
# a 4th broker as the README says
sed -e 's/^node_id: 1/node_id: 4/' -e 's/^port: 7171/port: 7174/' -e 's/^pub_port: .*/pub_port: 7274/' -e '/^controller_port/d' -e "s#^data_dir: .*#data_dir: $W/fabric-cluster/broker-4#" fabric-cluster/broker-1.yaml > fabric-cluster/broker-4.yaml
cat fabric-cluster/broker-4.yaml
(fabric broker --config $W/fabric-cluster/broker-4.yaml > fabric-cluster/broker-4.log 2>&1 &)
sleep 3
fabric reassign --generate --topics orders --brokers 1,2,3,4 -b $B > plan.json; cat plan.json
# kill a leader while the plan runs
L=$(fabric topic describe orders -b $B --output json | python3 -c "import json,sys; d=json.load(sys.stdin); print(d[0]['partitions'][0]['leader'])" 2>/dev/null)
echo "partition 0 leader: $L"
fabric reassign --plan plan.json --throttle 20000000 --wait -b $B &
RP=$!
sleep 2
P=$(pgrep -f "$W/fabric-cluster/broker-$L.yaml" | head -1); echo "kill -9 broker $L (pid $P)"; kill -9 $P
sleep 4
(fabric broker --config $W/fabric-cluster/broker-$L.yaml >> fabric-cluster/broker-$L.log 2>&1 &)
wait $RP; echo "reassign --wait rc=$?"
fabric reassign --verify --plan plan.json -b $B; echo "verify rc=$?"
fabric cluster decommission 1 --wait -b $B; echo "decommission rc=$?"
P=$(pgrep -f "$W/fabric-cluster/broker-1.yaml" | head -1); kill -TERM $P; sleep 3
# another leader kill after the decommission
L=$(fabric topic describe orders -b 127.0.0.1:7172 --output json | python3 -c "import json,sys; d=json.load(sys.stdin); print(d[0]['partitions'][1]['leader'])" 2>/dev/null)
P=$(pgrep -f "$W/fabric-cluster/broker-$L.yaml" | head -1); echo "kill -9 broker $L (pid $P)"; kill -9 $P; sleep 4
(fabric broker --config $W/fabric-cluster/broker-$L.yaml >> fabric-cluster/broker-$L.log 2>&1 &)
sleep 8
touch $W/stop; sleep 5; cat $W/load.out
fabric cluster rebalance-leaders -b 127.0.0.1:7172
sleep 3
fabric cluster status -b 127.0.0.1:7172
fabric topic describe orders -b 127.0.0.1:7172
fabric cluster down --data-dir $W/fabric-cluster
pkill -TERM -f "$W/fabric-cluster/broker-4.yaml"; sleep 3
python $REPO/tools/cluster_check.py --acks $W/acks.jsonl $W/fabric-cluster/broker-*/
rc=$?; echo "check rc=$rc"; exit $rc
