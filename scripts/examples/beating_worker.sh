#!/bin/sh
# A worker for the demo board: beats for its entity with `hamtools heartbeat`, BEATS times a
# period apart, then stalls for STALL seconds, over and over. A stall of more than MISSED_HIGH
# periods makes it a hung worker in ham's eyes (MISSEDHIGH; the kill-and-restart of seed 001
# comes with the heartbeat issue).
# HAMTOOLS: the zipapp (default: hamtools on PATH). The entity name: $1, else HAM_ENTITY,
# which ham sets for everything it starts.
HAMTOOLS=${HAMTOOLS:-hamtools}
NAME=${1:-$HAM_ENTITY}
PERIOD=${PERIOD:-1}
BEATS=${BEATS:-10}
STALL=${STALL:-6}
while :; do
    i=0
    while [ "$i" -lt "$BEATS" ]; do
        "$HAMTOOLS" heartbeat "$NAME" || echo "beating_worker: heartbeat for $NAME failed" >&2
        sleep "$PERIOD"
        i=$((i + 1))
    done
    sleep "$STALL"
done
