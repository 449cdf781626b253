/* SPDX-License-Identifier: MIT */
#pragma once

/* Sends MESSAGE to $NOTIFY_SOCKET without blocking: a receiver whose queue is full loses it.
 * For STATUS= updates, which the next one supersedes; READY=1 and its like go through
 * sd_notify(), which waits. Returns 0 if sent or not under a service manager, else -errno. */
int notify_nonblocking(const char *message);
