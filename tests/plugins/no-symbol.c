/* SPDX-License-Identifier: MIT */
/* A shared object that is not an Apiary plugin: it does not export apiary_plugin. */
__attribute__((visibility("default"))) int not_a_plugin(void);
int not_a_plugin(void) {
        return 42;
}
