/* SPDX-License-Identifier: MIT */
/*
 * lying-zygote: preloaded into apiary-worker --zygote by tests/test-security.c, it stands for a
 * plugin that took over its zygote. Every answer to Fork() names $APIARY_TEST_LIE_PID instead of
 * the worker it forked, as a plugin's constructor could make it do: apiaryd must not believe it.
 */
#include <stdarg.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <systemd/sd-bus.h>

__attribute__((visibility("default"))) int sd_bus_reply_method_return(sd_bus_message *call, const char *types, ...) {
        const char *member = sd_bus_message_get_member(call), *lie = getenv("APIARY_TEST_LIE_PID");
        va_list ap;
        int r;

        if (lie && types && strcmp(types, "u") == 0 && member && strcmp(member, "Fork") == 0) {
                sd_bus_message *reply = NULL;

                r = sd_bus_message_new_method_return(call, &reply);
                if (r >= 0)
                        r = sd_bus_message_append(reply, "u", (uint32_t) strtoul(lie, NULL, 10));
                if (r >= 0)
                        r = sd_bus_send(NULL, reply, NULL);
                sd_bus_message_unref(reply);
                return r;
        }
        va_start(ap, types);
        r = sd_bus_reply_method_returnv(call, types, ap);
        va_end(ap);
        return r;
}
