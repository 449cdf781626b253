/* SPDX-License-Identifier: MIT */
#pragma once

#include <stddef.h>
#include <stdint.h>

/* The libFuzzer entry point each fuzz-*.c defines. Built with clang -fsanitize=fuzzer, libFuzzer
 * calls it (tests/fuzz/run-libfuzzer); built by meson, fuzz-main.c replays the corpus through it. */
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
