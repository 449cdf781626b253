#!/bin/sh
# apiary-worker, with its zygote (and only its zygote) lying about the PIDs it forks: see
# lying-zygote.c. $APIARY_TEST_REAL_WORKER is the real binary.
case " $* " in
*" --zygote "*) LD_PRELOAD=$APIARY_TEST_LYING_ZYGOTE exec "$APIARY_TEST_REAL_WORKER" "$@" ;;
*) exec "$APIARY_TEST_REAL_WORKER" "$@" ;;
esac
