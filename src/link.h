/* link.h: connections to remote legs (NBD through libnbd, iSCSI through
 * libiscsi), one ops table per transport.
 *
 * Contract of a transport (struct link_ops):
 *   - connect() runs on a connector thread (or at start-up), may block up to
 *     the deadline (name resolution, handshake, login), and returns a
 *     connection ready for I/O, with the leg's size and block size; or NULL
 *     with one line in err.
 *   - Everything else runs on the site worker's thread only, never blocks,
 *     and never waits for the remote: submit() queues a request; events()
 *     says which fd and poll events the connection needs; notify() is called
 *     with the revents, tick() about every 100 ms (timers).  Completion
 *     callbacks run from inside notify(), tick() or close(), on the worker.
 *   - A completion gets res >= 0 (bytes written for WRITE/ZERO/TRIM, 0 for
 *     FLUSH) or -errno.  Errors that mean "the connection is gone"
 *     (link_conn_error) make the worker drop the connection and re-send
 *     after reconnecting; others (EIO from the target) are retried.
 *   - close() frees the connection; requests still queued complete with
 *     -ENOTCONN or not at all (the worker ignores callbacks of an old
 *     connection).
 */
#ifndef REPLICATOR_LINK_H
#define REPLICATOR_LINK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "cfg.h"

enum { LREQ_WRITE, LREQ_ZERO, LREQ_FLUSH };
#define LREQ_FUA       1
#define LREQ_MAY_TRIM  2         /* zero that may unmap (still reads back zeroes) */

typedef void (*link_done_fn) (void *opaque, int res);

struct link_info {
  uint64_t size;                 /* bytes */
  uint32_t block_size;           /* smallest write the leg takes */
  bool can_flush, can_fua, can_zero;
  /* The remote is an nbd-replicator receiver (NBD: its export description
   * starts with LINK_RECEIVER_DESCRIPTION): it logs a connection's
   * requests in arrival order, so the worker may stream to it. */
  bool receiver;
  /* Set by the connection's check (stream.c): the worker may stream on it
   * (a receiver with room for the stream record at stream_off); the
   * receiver holds every entry <= stream_seq (its last stream record of
   * this device and generation; 0 if none). */
  bool stream;
  uint64_t stream_off, stream_seq;
  uint32_t stream_len;           /* bytes of a record write */
};

#define LINK_RECEIVER_DESCRIPTION "nbd-replicator receiver; protocol 1"

struct link_params {
  uint64_t deadline_ns;          /* CLOCK_MONOTONIC: give up connecting then */
  unsigned request_timeout_s;    /* transport-level timeout (iSCSI), 0 = none */
  uint32_t session_id;           /* stable per leg: iSCSI ISID qualifier */
};

struct link_ops {
  const char *name;
  bool fenced;                   /* a new connection aborts the old one's requests */
  void *(*connect) (const char *addr, const struct link_params *p,
                    struct link_info *info, char *err, size_t errlen);
  void (*close) (void *c);
  /* 0 queued, or -errno (the connection is unusable: treat as gone). */
  int (*submit) (void *c, int op, const void *buf, uint64_t off, uint32_t len,
                 int flags, link_done_fn fn, void *opaque);
  /* Poll events the connection waits for (POLLIN/POLLOUT), and its fd in
   * *fd; 0 = nothing to poll right now. */
  int (*events) (void *c, int *fd);
  /* -1 when the connection died. */
  int (*notify) (void *c, int revents);
  int (*tick) (void *c);
  /* Abort the connection now (shutdown the socket): requests in flight may
   * still be executed by the remote later (in doubt). */
  void (*abort) (void *c);
  /* Read synchronously, waiting at most until deadline_ns: 0 or -errno.
   * Only on a connection of its own (struct rreader), never on the
   * worker's: it runs its own poll loop. */
  int (*pread) (void *c, void *buf, uint32_t len, uint64_t off, uint64_t deadline_ns);
  /* Write len bytes at off and make them durable before returning 0 (a
   * write with FUA, or a write then a flush; on a server that can neither,
   * NBD sends the write alone); same rules as pread: a connection of its
   * own, at most until deadline_ns, 0 or -errno, a timeout aborts the
   * connection.  iSCSI: off and len in whole blocks (-EINVAL otherwise). */
  int (*pwrite_durable) (void *c, const void *buf, uint32_t len, uint64_t off,
                         uint64_t deadline_ns);
  /* How far from off [off, off + len) is known to read as zeroes (NBD
   * block status; *end = off when unknown or data); same rules as pread.
   * NULL: no such information. */
  int (*zero_end) (void *c, uint64_t off, uint32_t len, uint64_t deadline_ns, uint64_t *end);
  /* A receiver's stream fence (stream.h): an NBD CACHE request of len bytes
   * at off, answered; same rules as pread.  -EOPNOTSUPP when the server
   * takes no CACHE.  NULL: no such request (iSCSI). */
  int (*fence) (void *c, uint64_t off, uint32_t len, uint64_t deadline_ns);
};

/* The ops table for a transport; NULL if not built in (message in *why). */
const struct link_ops *link_ops_for (enum cfg_transport t, const char **why);

/* res is a "connection gone" error. */
bool link_conn_error (int res);

/* addr with an inline iSCSI CHAP password replaced by "***" (for logs
 * and status). */
void link_redact (const char *addr, char *buf, size_t len);
/* The FILE of an iSCSI URL's user%+FILE@ password, or NULL. */
const char *link_secret_file (const char *addr, char *buf, size_t len);

#ifdef HAVE_LIBNBD
extern const struct link_ops link_nbd_ops;
#endif
#ifdef HAVE_LIBISCSI
extern const struct link_ops link_iscsi_ops;
#endif

#endif
