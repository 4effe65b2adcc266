/* rlink.h: the connection state of one remote leg (see link.c).
 *
 * conn, info, gen and up belong to the site worker.  The connector thread
 * and the worker meet under lock: want (worker asks for a connection),
 * ready_conn (connector hands one over), last_error (status).
 */
#ifndef REPLICATOR_RLINK_H
#define REPLICATOR_RLINK_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "link.h"

struct rlink {
  const struct link_ops *ops;
  const char *addr;
  char shown[512];               /* addr for messages (no inline password) */
  char what[128];                /* "device 'x' site 1" for messages */
  struct link_params params;     /* deadline filled per attempt */
  uint64_t connect_timeout_ms;
  unsigned backoff_max_ms;       /* reconnect attempts at most this far apart */
  uint64_t min_size;             /* the device's size */
  uint32_t max_block;            /* the device's block size */
  /* Optional check of a new connection (NULL = none), set by the owner
   * before rlink_start and not changed while it runs.  It runs after the
   * size and block-size checks pass, on every connection made for the
   * worker (on the connector thread, or at start-up in
   * rlink_connect_once); a reader's connection (struct rreader) is not
   * checked: it reads and writes what the worker's connection was
   * checked to be.  The connection is nobody else's yet: the check may use
   * ops->pread and ops->pwrite_durable on conn, and may block up to the
   * connection's deadline (the transport's request timeout); it must not
   * touch worker state except under its own locking.  0 = accept (the
   * connection goes on as today); -1 = refuse with one line in err: the
   * connection is closed and the attempt is `unsuitable` (logged once per
   * different reason by the connector, retried after its backoff, so a
   * remote put right is picked up). */
  int (*check) (void *opaque, void *conn, const struct link_ops *ops,
                struct link_info *info, char *err, size_t errlen);
  void *check_opaque;
  bool inited;

  /* Worker side. */
  void *conn;
  struct link_info info;
  uint32_t gen;                  /* +1 per connection: stale callbacks are ignored */
  bool up;
  uint64_t down_since_ns;
  uint64_t connects, drops;      /* connections made, connections lost */
  bool receiver;                 /* the connected remote is a receiver (atomic: status) */
  uint64_t last_answer_ns;       /* the worker's: an answer of this connection last came */
  uint64_t poll_tag;             /* armed POLL_ADD, 0 = none */
  int armed_fd, armed_ev;

  /* Shared with the connector thread.  lock guards want, stop,
   * thread_running, ready_conn, ready_info, last_error and attempts; cv wakes
   * the connector (want, stop); thread and wake_fd are set before the
   * connector starts and not changed while it runs. */
  pthread_mutex_t lock;
  pthread_cond_t cv;
  bool want, stop, thread_running;
  void *ready_conn;
  struct link_info ready_info;
  char last_error[256];
  uint64_t attempts;
  pthread_t thread;
  int wake_fd;                   /* the worker's eventfd */
};

int rlink_init (struct rlink *k, const struct link_ops *ops, const char *addr, const char *what);
/* One synchronous attempt (start-up): conn or NULL with the reason. */
void *rlink_connect_once (struct rlink *k, uint64_t timeout_ms, struct link_info *info,
                          char *err, size_t errlen, bool *unsuitable);
int rlink_start (struct rlink *k);
void rlink_want (struct rlink *k);
void *rlink_take (struct rlink *k, struct link_info *info);
void rlink_set_error (struct rlink *k, const char *fmt, ...) __attribute__ ((format (printf, 2, 3)));
void rlink_get_error (struct rlink *k, char *buf, size_t len);
void rlink_stop (struct rlink *k);
void rlink_destroy (struct rlink *k);

/* A second connection to the same leg for synchronous reads and durable
 * writes from any thread (verify; reads through a remote leg; the leg's
 * label), made on first use, one user at a time. */
struct rreader {
  pthread_mutex_t lock;          /* guards conn (made, used and dropped under it:
                                    one reader at a time); link is fixed */
  struct rlink *link;            /* NULL until rreader_init */
  void *conn;
};
void rreader_init (struct rreader *rr, struct rlink *k);
/* 0, or -errno with one line in err (err[0] = 0 on entry). */
int rreader_pread (struct rreader *rr, void *buf, uint32_t len, uint64_t off, char *err,
                   size_t errlen);
/* Write len bytes at off and make them durable (link_ops.pwrite_durable),
 * same rules as rreader_pread. */
int rreader_pwrite_durable (struct rreader *rr, const void *buf, uint32_t len, uint64_t off,
                            char *err, size_t errlen);
/* How far from off the leg is known to read as zeroes (*end = off: data
 * or unknown): 0 or -errno. */
int rreader_zero_end (struct rreader *rr, uint64_t off, uint32_t len, uint64_t *end);
void rreader_destroy (struct rreader *rr);

#endif
