/* replicator.h: the object graph of one instance (types only).
 *
 *   struct replicator      one instance: configuration, log, sites, devices
 *     struct replog        the replication log shared by all devices
 *     struct site          a site (0 = local legs); one worker thread each
 *     struct vdev          a virtual device (one NBD export)
 *       struct leg         the device's copy at one site
 *
 * Client I/O (rdev_*) touches only the log and the read overlay; workers
 * apply the log to the legs.  Only the plugin knows about nbdkit.
 *
 * The functions live in one header per file, by layer (calls go down):
 *   6  instance.h (construct, start, stop)
 *   5  client.h (client I/O), status.h, admin.h, verify.h, metrics.h
 *   4  the workers (worker.c)
 *   3  view.h (the device view: reads through a leg + the overlay),
 *      site.h (the site state machine and the policies' waits)
 *   3  leg.h (one leg's synchronous I/O, used by the view and the workers)
 * This header includes them all at its end, so that a file including it
 * alone (worker.c today) still sees every function it calls; new code
 * includes the headers it uses.
 *
 * Names: a leg or site is "fed" when a worker applies the log to it; a
 * device's "read site" is where its reads come from (0: its local leg).
 * "Dirty log" is the record of regions a leg misses (the bitmap
 * leg.dirty_log and its file leg.dlog); "dirty-log mode" is the site
 * state in which a site is not fed and its misses go to those records;
 * "dirty" alone is only what status shows for that mode.
 */
#ifndef REPLICATOR_REPLICATOR_H
#define REPLICATOR_REPLICATOR_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "bitmap.h"
#include "cfg.h"
#include "label.h"
#include "leg.h"
#include "metrics.h"
#include "overlay.h"
#include "replog.h"
#include "rlink.h"

struct replicator;
struct site;
struct worker;

/* A leg's label (leg-label.c; safety rule 15). */
struct leg_label {
  enum cfg_label where;          /* end, file or none */
  int fd;                        /* path legs: label I/O (the leg's fd, or the
                                    label file's when own_fd); -1 otherwise */
  bool own_fd;
  uint64_t base;                 /* offset of copy A (remote legs: set at connect) */
  uint64_t area;                 /* bytes the end area takes (0: file or none) */
  bool trust_new;                /* a new leg of a site new in this log whose legs
                                    are trusted (dirty_log sync = false): taken as
                                    equal to the device when first labelled */
  /* lock guards everything below: the connector thread checks remote legs,
   * the worker and status read. */
  pthread_mutex_t lock;
  struct label cur;              /* as last read or written (have) */
  bool have;
  enum lbl_found found;
  enum lbl_class cls;            /* at the last check (checked) */
  bool checked;
  bool refused;                  /* never written: not ours (cls says why) */
  bool recheck;                  /* the label changed under a running connection:
                                    the worker drops it to check again (atomic) */
  uint64_t checks, writes;
  char detail[640];              /* the last check or write, for status */
  /* The leg's failback record, read at connect, for the worker to merge
   * into the leg's dirty log (site.record_devs). */
  uint8_t *record;
  uint64_t record_bytes;
  uint32_t record_region;
  /* A record of our own being written (failback): in the label. */
  uint64_t own_since, own_gen;
  /* A label write posted for the label thread (leg-label.c: a remote
   * leg's label is never written on its worker's thread); guarded by the
   * label thread's queue lock, not lock above.  post_pending: queued or
   * busy, also written under that lock, read without it (atomic). */
  bool post_queued, post_busy, post_check, post_pending;
  uint32_t post_flags;
  uint64_t post_seq, post_ns;
};

struct leg {
  struct vdev *dev;
  unsigned site;
  const struct cfg_leg *cfg;
  int fd;                        /* writes (io_uring); O_DIRECT when `direct` */
  bool direct;
  bool is_blk;
  uint32_t lbs;                  /* logical block size: O_DIRECT alignment */
  uint64_t size;
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
  struct bitmap *dirty_log;
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
  struct leg_label lb;
};

/* Write generations (verify.c): grain size and slots per device. */
#define VDEV_WGEN_GRAIN (64u << 10)
#define VDEV_WGEN_SLOTS 16384u

/* A device's client request counters for status (atomic adds). */
struct vdev_counters {
  uint64_t reads, writes, zeroes, trims, flushes;
  uint64_t bytes_read, bytes_written;
};

/* Client request latency of one operation (atomic adds): bucket[i] counts
 * requests that took at most lat_bounds[i] seconds and more than the
 * bound before. */
struct vdev_latency {
  uint64_t bucket[LAT_BUCKETS];
  uint64_t count, sum_ns, errors;
};

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
  /* A receiver (receiver=yes): the newest stream fence of this device
   * (nbdkit plugin, stream.h): a connection that fenced before takes no
   * more changes. */
  uint64_t fence_gen;

  /* ov_lock guards: ov (the index of entries not yet on the leg reads go
   * through) and the log bytes it points to while they are copied, and
   * the changes of local_out and read_site (read without it, atomically,
   * by status and by readers waiting for a read site). */
  pthread_mutex_t ov_lock;
  struct overlay *ov;

  /* The local leg out of service (failed, or being restored): reads go
   * through site `read_site`'s leg plus the entries it has not applied
   * (the overlay then indexes those), and that site's worker trims the
   * overlay. */
  bool local_out;
  unsigned read_site;            /* 0 = the local leg */

  /* rmw_lock guards the order of a device's log entries against an RMW:
   * a read-modify-write (a request not aligned to block_size) holds it
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

  struct vdev_counters counters;
  struct vdev_latency lat[LAT_OPS];
};

/* A site's verify run (verify.c writes, status reads): a thread of its own
 * while active. */
struct site_verify {
  pthread_t thread;
  bool thread_started;           /* to be joined */
  bool active, stop, mark;
  unsigned dev;
  uint64_t total, checked, differing, busy;
  uint64_t started_ns, finished_ns, runs;
  char error[300];               /* the last run's, under the site's lock */
};

/* A site's resync progress (the worker writes, status reads; site 0:
 * restores).  Atomics; reset under the site's lock as a resync starts. */
struct site_resync {
  uint64_t regions;              /* regions to copy when it started */
  uint64_t copied;               /* regions copied since */
  uint64_t bytes;                /* bytes sent as data (holes go as zeroes) */
  uint64_t zero_bytes;           /* bytes sent as write-zeroes */
  uint64_t started_ns;           /* CLOCK_MONOTONIC */
  uint64_t finished;             /* resyncs finished since start */
};

/* A site's last consistent point (under the site's lock): the legs hold
 * the state of the devices after entry seq (logged at time_ns,
 * CLOCK_REALTIME; 0 = unknown); not valid while a resync mixes states or
 * writes are in doubt. */
struct site_consistent {
  uint64_t seq, time_ns;
  bool valid;
};

struct site {
  struct replicator *r;
  unsigned id;
  const struct cfg_site *cfg;
  /* Policy now (from cfg; replctl policy changes it): atomics. */
  enum cfg_policy policy;
  enum cfg_fall_behind fall_behind;
  uint64_t fall_behind_value;
  struct worker *worker;
  pthread_t thread;
  bool running;

  /* lock guards: done_seq and sync_waiters; the changes of the state
   * fields disconnected, catching_up, dirty_log_mode and resyncing, and
   * the clearing of in_doubt (site.c's transitions; all are read without
   * it, atomically); cons; the resync
   * counters and bytes_base as a resync starts; verify's start and end
   * (verify.active, thread, thread_started, the figures reset, error).
   * cv (CLOCK_MONOTONIC): clients waiting for the site (site_wait_done,
   * verify) are woken on done_seq and on state and policy changes. */
  pthread_mutex_t lock;
  pthread_cond_t cv;
  uint64_t done_seq;             /* every entry <= this is on the legs (maybe not durable) */
  unsigned sync_waiters;

  /* The state (site.c: read it with site_state (), change it with the
   * transition functions there, which the worker calls).  Read anywhere. */
  bool disconnected;             /* clients no longer wait for it */
  bool catching_up;              /* back after a disconnection, not caught up yet */
  bool dirty_log_mode;           /* not fed from the log */
  bool resyncing;                /* back in log mode, copying its dirty logs */
  /* Orthogonal flags (site.c says why). */
  bool in_doubt;                 /* writes of an aborted connection may land
                                    late: not consistent until resynchronised */
  bool paused;                   /* the administrator's: not fed; clients do not wait */
  uint64_t disconnects;
  /* A sync site's latency budget (site.c, cfg sync_deadline): set when a
   * client's wait hit the deadline, cleared once the site has caught up;
   * while set, clients treat the site as async.  Changed under lock, read
   * anywhere (atomics); the counters are atomics. */
  bool sync_behind;
  uint64_t sync_behind_since_ns; /* mono_ns when it went behind */
  uint64_t sync_misses;          /* client waits that hit the deadline */
  uint64_t sync_behind_count;    /* times it went behind */
  /* Administrator's requests (replctl), taken by the worker. */
  bool resync_now;               /* resync without waiting for the retry delay */
  uint32_t resync_full_devs;     /* devices whose leg here is to be copied in full */
  uint32_t record_devs;          /* devices whose leg here has a failback record
                                    (leg.lb.record) to merge into its dirty log */
  bool discard_split;            /* replctl discard: this site's legs in split brain
                                    lose their changes: copied from us */
  uint32_t read_site_req;        /* devices whose reads this site is to take (their
                                    local leg failed) */
  uint32_t read_site_devs;       /* devices whose reads go through this site (worker) */
  uint32_t restore_req;          /* site 0: devices whose local leg is to be restored */
  uint32_t fail_req;             /* site 0: devices whose local leg failed a read */
  struct site_verify verify;
  /* legs_gen (atomic, the worker adds one) changes whenever the legs may
   * hold less than done_seq says or the site leaves log mode: a lost
   * connection (entries re-sent, writes in doubt), a failed flush of a
   * remote leg, dirty-log mode, the start of a resync (verify). */
  uint64_t legs_gen;
  struct site_resync resync;
  struct site_consistent cons;
  /* Backlog in bytes (site_backlog_bytes): bytes logged - done + base. */
  int64_t bytes_base;            /* payload bytes pending at start (or at a
                                    return from dirty-log mode) */
  uint64_t bytes_done;           /* payload bytes applied since */
  /* The link of a site with connections (its worker writes, status reads;
   * atomics): bytes on the wire the remote acknowledged (payload plus a
   * request header each), and their rate over the last 5 s. */
  uint64_t link_bytes;
  uint64_t link_bytes_per_s;
  /* Streaming to a receiver (worker-remote.c; atomics): on now; new
   * connections that resumed after the receiver's stream record; stream
   * records sent. */
  bool stream;
  uint64_t stream_resumes;
  uint64_t stream_records;
  /* Log writes (the worker adds, status reads; atomics): payload bytes
   * the legs took (entries, and the pieces of coalesced runs), and what
   * coalescing within an epoch did not send (worker-apply.c): payload
   * bytes and entries a later entry of the same run overwrote, and runs. */
  uint64_t log_bytes_sent;
  uint64_t coalesced_bytes;
  uint64_t coalesced_entries;
  uint64_t coalesced_runs;
};

/* A planned switchover (admin.c; replctl switchover).  state is atomic:
 * client.c refuses writes (EROFS) from HO_DRAINING on, reading it under
 * the device's rmw_lock; leg-label.c adds LBL_HANDOVER to every label
 * written from HO_LABELLING on.  seq and time_ns are set before state
 * moves to HO_LABELLING and do not change after. */
enum handover_state {
  HO_NONE,                       /* the primary: writes accepted */
  HO_DRAINING,                   /* read-only, sites draining (undone on failure) */
  HO_LABELLING,                  /* read-only, the legs' labels being written */
  HO_FAILED,                     /* read-only: a label write failed (may be retried) */
  HO_DONE,                       /* handed over at seq: read-only for good */
};
struct replicator_handover {
  enum handover_state state;
  uint64_t seq;                  /* the last seq of this generation's log */
  uint64_t time_ns;              /* CLOCK_REALTIME of the handover */
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
  uint64_t label_check_ns;       /* remote labels read at most this often, written
                                    at most twice as long; 0: the default
                                    (worker-ckpt.c) */
  const char *engine;            /* "io_uring" or "threads" */
  uint64_t started;              /* CLOCK_REALTIME seconds */
  uint64_t bytes_logged;         /* payload bytes logged since start */
  struct leglabel_thread *label_thread;   /* leg-label.c: remote label writes */
  /* Wake a site's worker (set by the instance: worker_poke).  The device
   * view, below the workers, reaches them through it. */
  void (*poke) (struct site *s);
  struct replicator_handover handover;
};

#include "admin.h"
#include "client.h"
#include "instance.h"
#include "site.h"
#include "status.h"
#include "verify.h"
#include "view.h"

/* worker.c (its own header comes with the split of the worker layer). */
int worker_start (struct site *s);
void worker_stop (struct site *s);
/* Wake the site's worker (a request is waiting for it). */
void worker_poke (struct site *s);

#endif
