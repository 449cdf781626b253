#!/bin/sh
# apiary-worker, with its zygote (and only its zygote) lying about the PIDs it forks: see
# lying-zygote.c. $APIARY_TEST_REAL_WORKER is the real binary. In an ASan build, ASan's runtime
# must come first in LD_PRELOAD.
case " $* " in
*" --zygote "*)
        asan=$(ldd "$APIARY_TEST_REAL_WORKER" | awk '/libasan/ { print $3 }')
        LD_PRELOAD="${asan:+$asan }$APIARY_TEST_LYING_ZYGOTE" exec "$APIARY_TEST_REAL_WORKER" "$@" ;;
*) exec "$APIARY_TEST_REAL_WORKER" "$@" ;;
esac
