/* replicator.h: the object graph of one instance and its lifecycle.
 *
 *   struct replicator      one instance: configuration, log, sites, devices
 *     struct replog        the replication log shared by all devices
 *     struct site          a site (0 = local legs); one worker thread each
 *     struct vdev          a virtual device (one NBD export)
 *       struct leg         the device's copy at one site
 *
 * Client I/O (rdev_*) touches only the log and the read overlay; workers
 * apply the log to the legs.  Only the plugin knows about nbdkit.
 */
#ifndef REPLICATOR_REPLICATOR_H
#define REPLICATOR_REPLICATOR_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "bitmap.h"
#include "cfg.h"
#include "overlay.h"
#include "replog.h"
#include "rlink.h"

struct replicator;
struct site;
struct worker;

enum leg_state { LEG_REPLICATING, LEG_BEHIND, LEG_DISCONNECTED, LEG_DIRTY, LEG_RESYNCING, LEG_FAILED };

struct leg {
  struct vdev *dev;
  unsigned site;
  const struct cfg_leg *cfg;
  int fd;                        /* writes (io_uring); O_DIRECT when `direct` */
  bool direct;
  bool is_blk;
  uint32_t lbs;                  /* logical block size: O_DIRECT alignment */
  uint64_t size;
  bool served;                   /* fed from the log by a worker */
  enum leg_state state;
  bool zero_range_ok, punch_ok;  /* fallocate modes, switched off on EOPNOTSUPP */
  bool zero_refused;             /* remote: write-zeroes refused, zeroes are written */
  uint64_t errors;               /* I/O errors seen */

  /* Remote legs (NBD, iSCSI); path legs at remote sites use fd above. */
  bool remote;
  struct rlink link;
  struct rreader reader;         /* reads (verify, ...) on a connection of their own */
  unsigned windex;               /* index in its worker's leg table */
  int ckpt_pending;              /* a flush of a checkpoint is in flight */
  uint32_t ckpt_gen;
  uint64_t ckpt_sent_ns;
  struct leg_ckpt { struct leg *leg; struct worker *w; } ckpt_cb;

  /* What the leg misses (core dirty log): regions released from the log
   * while its site was in dirty-log mode, or all of it when that record
   * was lost (restart) or the leg was never synchronised. */
  struct bitmap *dirty;
  struct dlog *dlog;             /* its file (dirty_log type disk), or NULL */
  bool dlog_created;             /* the file was created at this start */
  bool dlog_failed;              /* could not be written, also after reopening it:
                                    every region marked, file invalidated, site
                                    flagged RL_SITE_DLOG_LOST in the log header */
  bool initial_sync;             /* never synchronised: needs a full copy */
  /* Regions written by requests of a connection we aborted: the remote may
   * still execute them after newer writes (safety rule 5).  Not consistent
   * until they are copied again (resync). */
  struct bitmap *doubt;
  bool doubt_pending;            /* doubt has bits not yet queued for a copy (worker) */
  uint64_t doubt_events;
  char last_error[160];          /* last I/O error on this leg (worker) */
  bool sync_failed;              /* a path leg's flush failed; no checkpoint has
                                    flushed it since (worker; safety rule 13) */
  bool written_ok;               /* a write succeeded since its last failure (worker) */
  int reopen_fd;                 /* restore: the leg opened again, for the worker */
  bool stale;                    /* local leg out of service at the last stop: it may
                                    lack writes of then; only a restore brings it back */
};

/* Client operations timed for metrics. */
enum lat_op { LAT_READ, LAT_WRITE, LAT_ZERO, LAT_TRIM, LAT_FLUSH, LAT_OPS };
#define LAT_BUCKETS 16
/* Write generations (verify.c): grain size and slots per device. */
#define VDEV_WGEN_GRAIN (64u << 10)
#define VDEV_WGEN_SLOTS 16384u

struct vdev {
  struct replicator *r;
  unsigned index;                /* device number in the log */
  const struct cfg_device *cfg;
  const char *name;
  uint64_t size;
  uint32_t block_size;           /* advertised minimum */
  uint32_t max_request;          /* advertised maximum; longer requests are split */
  struct leg *legs;              /* one per configured leg */
  size_t nlegs;
  struct leg *local;             /* the site-0 leg */

  /* This lock protects the overlay (index of entries not yet on the local
   * leg) and the log bytes it points to while they are copied. */
  pthread_mutex_t ov_lock;
  struct overlay *ov;

  /* The local leg out of service (failed, or being restored): reads go
   * through site `serving`'s leg plus the entries it has not applied
   * (the overlay then indexes those), and that site's worker trims the
   * overlay.  Changed under ov_lock. */
  bool local_out;
  unsigned serving;              /* 0 = the local leg */

  /* A read-modify-write (a request not aligned to block_size) holds it
   * for writing from its read to its log entry; aligned writes, zeroes
   * and trims hold it for reading while they log, so none lands between
   * an RMW's read and its entry (which would carry the old data back). */
  pthread_rwlock_t rmw_lock;

  /* Write generations (verify.c): every logged write, write-zeroes and
   * trim adds one to the slot of each grain it touches, once it is in the
   * overlay and before it is committed (before any site can apply it).
   * Grain g uses slot g % VDEV_WGEN_SLOTS: grains sharing a slot only make
   * verify look again.  Atomic adds. */
  uint32_t wgen[VDEV_WGEN_SLOTS];

  /* Counters for status (atomic adds). */
  uint64_t reads, writes, zeroes, trims, flushes;
  uint64_t bytes_read, bytes_written;

  /* Client request latency (atomic adds): bucket[i] counts requests that
   * took at most lat_bounds[i] seconds and more than the bound before. */
  struct {
    uint64_t bucket[LAT_BUCKETS];
    uint64_t count, sum_ns, errors;
  } lat[LAT_OPS];
};

struct site {
  struct replicator *r;
  unsigned id;
  const struct cfg_site *cfg;
  /* Policy now (from cfg; replctl policy changes it): atomics. */
  enum cfg_policy policy;
  enum cfg_fall_behind fall_behind;
  uint64_t fall_behind_value;
  bool served;                   /* a worker applies the log here */
  struct worker *worker;
  pthread_t thread;
  bool running;

  /* Protects done_seq; cv for clients of a sync site. */
  pthread_mutex_t lock;
  pthread_cond_t cv;             /* CLOCK_MONOTONIC */
  uint64_t done_seq;             /* every entry <= this is on the legs (maybe not durable) */
  unsigned sync_waiters;

  /* Link health (remote sites), written by the worker, read anywhere. */
  bool disconnected;             /* clients no longer wait for it */
  bool catching_up;              /* back after a disconnection, not caught up yet */
  bool dirty;                    /* dirty-log mode: not fed from the log */
  bool in_doubt;                 /* writes of an aborted connection may land
                                    late: not consistent until resynchronised */
  uint64_t disconnects;
  /* Resync (the worker writes, status reads): the site went back to log
   * mode and copies the regions in its legs' dirty logs. */
  bool resyncing;
  /* Administrator's requests (replctl), taken by the worker. */
  bool paused;                   /* not fed; clients do not wait for it */
  bool resync_now;               /* start a resync of a dirty site without delay */
  uint32_t resync_full_devs;     /* devices whose leg here is to be copied in full */
  uint32_t serve_req;            /* devices whose reads this site is to serve (their
                                    local leg failed) */
  uint32_t serving_devs;         /* devices it serves (worker) */
  uint32_t restore_req;          /* site 0: devices whose local leg is to be restored */
  uint32_t fail_req;             /* site 0: devices whose local leg failed a read */
  /* Verify (verify.c): a thread of its own while active.  legs_gen (atomic,
   * the worker adds one) changes whenever the legs may hold less than
   * done_seq says or the site leaves log mode: a lost connection (entries
   * re-sent, writes in doubt), a failed flush of a remote leg, dirty-log
   * mode, the start of a resync. */
  pthread_t verify_thread;
  bool verify_thread_started;    /* to be joined */
  bool verify_active, verify_stop, verify_mark;
  unsigned verify_dev;
  uint64_t verify_total, verify_checked, verify_differing, verify_busy;
  uint64_t verify_started_ns, verify_finished_ns, verifies;
  char verify_error[300];
  uint64_t legs_gen;
  uint64_t resync_regions;       /* regions to copy when it started */
  uint64_t resync_copied;        /* regions copied since */
  uint64_t resync_bytes;         /* bytes sent as data (holes go as zeroes) */
  uint64_t resync_zero_bytes;    /* bytes sent as write-zeroes */
  uint64_t resync_started_ns;    /* CLOCK_MONOTONIC */
  uint64_t resyncs;              /* resyncs finished since start */
  /* Last consistent point (under lock): the legs hold the state of the
   * devices after entry cons_seq (logged at cons_time_ns, CLOCK_REALTIME;
   * 0 = unknown); not valid while a resync mixes states or writes are in
   * doubt. */
  uint64_t cons_seq, cons_time_ns;
  bool cons_valid;
  int64_t bytes_base;            /* payload bytes pending at start */
  uint64_t bytes_done;           /* payload bytes applied since start */
};

struct replicator {
  struct cfg *cfg;
  struct replog *rl;
  struct replog_recovery rec;
  struct vdev *devs;
  size_t ndevs;
  struct site sites[CFG_MAX_SITES];
  uint32_t site_mask;
  bool stop;                     /* workers: drain and exit */
  uint64_t drain_ms;             /* bound on the drain at stop */
  bool force_sync_engine;        /* tests: no io_uring */
  const char *engine;            /* "io_uring" or "threads" */
  uint64_t started;              /* CLOCK_REALTIME seconds */
  uint64_t bytes_logged;         /* payload bytes logged since start */
};

/* Open legs and the log, recover, rebuild the overlay.  NULL on error
 * (reported).  No threads yet. */
struct replicator *replicator_new (struct cfg *cfg);
/* Start the syncer and the workers. */
int replicator_start (struct replicator *r);
/* Drain to the local legs for at most r->drain_ms, stop threads, write the
 * final header.  Correctness never depends on it. */
void replicator_stop (struct replicator *r);
void replicator_free (struct replicator *r);

struct vdev *replicator_find (struct replicator *r, const char *name);

/* Client I/O.  0 or -1 with errno set and the error reported. */
int rdev_pread (struct vdev *d, void *buf, uint32_t count, uint64_t offset);
int rdev_pwrite (struct vdev *d, const void *buf, uint32_t count, uint64_t offset, bool fua);
int rdev_zero (struct vdev *d, uint32_t count, uint64_t offset, bool may_trim, bool fua);
int rdev_trim (struct vdev *d, uint32_t count, uint64_t offset, bool fua);
int rdev_flush (struct replicator *r);
/* The device's content as a client would read it (resync source). */
int rdev_read_view (struct vdev *d, void *buf, uint32_t count, uint64_t offset);
/* The first half of a device-view read done with an asynchronous read of
 * the local leg: what the unapplied entries hold over [off, off + count)
 * is copied into buf now, and the ranges to take from the local leg (read
 * after this call) are returned in gaps.  -1: more than max gaps (E2BIG),
 * or the local leg is out of service (ENODEV). */
int rdev_view_overlay (struct vdev *d, void *buf, uint32_t count, uint64_t offset,
                       uint64_t (*gaps)[2], unsigned max, unsigned *n);
/* Where [off, off + len) stops being a hole of the device (no unapplied
 * entry, no data on the local leg file): off when it starts with data. */
uint64_t rdev_hole_end (struct vdev *d, uint64_t off, uint64_t len);

/* Status as a JSON document (malloc'd string), or as json-c's object. */
char *replicator_status_json (struct replicator *r, bool pretty);
struct json_object;
struct json_object *replicator_status_obj (struct replicator *r);

/* Metrics in the OpenMetrics text format (malloc'd, ends with "# EOF"). */
char *replicator_metrics (struct replicator *r);
/* The HTTP endpoint of metrics.listen: bind before the fork (errors reach
 * the operator), serve from a thread after it. */
int metrics_http_open (struct replicator *r, const char *listen);
int metrics_http_start (void);
void metrics_http_stop (void);

/* Client request latency for metrics: one histogram per device and
 * operation (nanoseconds; ok = the request succeeded). */
void rdev_observe (struct vdev *d, enum lat_op op, uint64_t ns, bool ok);
const char *lat_op_name (enum lat_op op);
extern const double lat_bounds[LAT_BUCKETS];

const char *leg_state_name (enum leg_state s);

/* Administrator's commands (control socket): 0, or -1 with a one-line
 * reason in why. */
int replicator_resync (struct replicator *r, const char *device, unsigned site, bool full,
                       char *why, size_t len);
int replicator_pause (struct replicator *r, unsigned site, bool pause, char *why, size_t len);
int replicator_set_policy (struct replicator *r, unsigned site, const char *policy,
                           const char *fall_behind, char *why, size_t len);
/* verify.c */
int replicator_verify (struct replicator *r, const char *device, unsigned site, bool mark,
                       char *why, size_t len);
void replicator_verify_stop (struct replicator *r);
/* replicator.c: the sum of d's write generations over [off, off + len). */
uint64_t vdev_wgen (struct vdev *d, uint64_t off, uint64_t len);
int replicator_restore (struct replicator *r, const char *device, unsigned site, char *why,
                        size_t len);
/* Make (under d->ov_lock) the read index hold exactly the entries of d
 * after seq `after` that are not on a leg yet (on_leg(opaque, seq): one
 * applied out of order): what a leg that applied them lacks. */
int vdev_overlay_reset (struct vdev *d, uint64_t after, bool (*on_leg) (void *, uint64_t),
                        void *opaque);
/* A remote site that can serve reads of d (its leg is a consistent prefix
 * and fed from the log), the most up to date; 0 if none. */
unsigned vdev_pick_server (struct vdev *d);
/* Read a leg (any kind) synchronously: 0, or -errno with a line in err. */
int leg_pread_any (struct leg *l, void *buf, uint32_t len, uint64_t off, char *err, size_t errlen);
/* Flush the leg's dirty-log file (dlog_flush; a failure retried with
 * success is logged): 0, or -1 (errno) when the file could not be
 * written, also after reopening it. */
int leg_dlog_flush (struct leg *l);

/* worker.c */
int worker_start (struct site *s);
void worker_stop (struct site *s);
/* Wake the site's worker (a request is waiting for it). */
void worker_poke (struct site *s);
/* Client side of the policies: wait until the site's legs hold entry
 * seq (sync), or only while the site is over its fall_behind threshold
 * (fall_behind = true); never past the site's disconnect_timeout, nor
 * for a disconnected or dirty site. */
int site_wait_done (struct site *s, uint64_t seq, bool fall_behind);
/* Backlog of a site as seen by a writer whose newest entry is last. */
uint64_t site_backlog_entries (struct site *s, uint64_t last);
uint64_t site_backlog_bytes (struct site *s);
uint64_t site_oldest_age_ms (struct site *s, uint64_t last);
bool site_over_threshold (struct site *s, uint64_t last);

#endif
