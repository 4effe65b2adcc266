/* nbdkit-replicator-plugin: callbacks only.  The replicator lives in
 * src/ (libreplicator); this file maps nbdkit's callbacks onto it and
 * routes its messages to nbdkit's log. */
#include <config.h>

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define NBDKIT_API_VERSION 2
#include <nbdkit-plugin.h>

#include "cfg.h"
#include "control.h"
#include "link.h"
#include "replicator.h"
#include "report.h"
#include "stream.h"
#include "units.h"

#define THREAD_MODEL NBDKIT_THREAD_MODEL_PARALLEL

/* Debug flags (nbdkit -v -D replicator.NAME=1), see nbdkit-replicator-plugin(1):
 * verbose turns every category on. */
NBDKIT_DLL_PUBLIC int replicator_debug_verbose;
NBDKIT_DLL_PUBLIC int replicator_debug_worker;
NBDKIT_DLL_PUBLIC int replicator_debug_link;
NBDKIT_DLL_PUBLIC int replicator_debug_log;
NBDKIT_DLL_PUBLIC int replicator_debug_resync;
NBDKIT_DLL_PUBLIC int replicator_debug_control;
NBDKIT_DLL_PUBLIC int replicator_debug_event;

/* nbdkit sets the flags right after loading the plugin. */
static void
debug_flags (void)
{
  unsigned m = 0;
  if (replicator_debug_verbose) m |= REP_DBG_ALL;
  if (replicator_debug_worker) m |= REP_DBG_WORKER;
  if (replicator_debug_link) m |= REP_DBG_LINK;
  if (replicator_debug_log) m |= REP_DBG_LOG;
  if (replicator_debug_resync) m |= REP_DBG_RESYNC;
  if (replicator_debug_control) m |= REP_DBG_CONTROL;
  if (replicator_debug_event) m |= REP_DBG_EVENT;
  report_set_debug_mask (m);
}

static struct cfg_short *params;     /* collected by .config */
static struct cfg *cfg;              /* built by .config_complete */
static struct replicator *rep;       /* opened by .get_ready */
static struct control *ctl;          /* started by .after_fork */
static bool receiver;                /* receiver=yes: see replicator_thread_model */

/* The export description a primary looks for at connect (link-nbd.c):
 * a receiver keeps arrival order, so the primary may stream to it. */
#define RECEIVER_DESCRIPTION LINK_RECEIVER_DESCRIPTION

/* One client connection.  A receiver's connection is broken by its first
 * failed write, zero, trim or flush: every later request of it fails too,
 * so a stream never goes on past a hole (what the receiver holds stays a
 * prefix of what was sent); the primary reconnects and resumes from the
 * receiver's stream record. */
struct rconn {
  struct vdev *d;
  bool broken;
  uint64_t gen;                      /* its fence's generation; 0: none sent */
};


static void
sink_error (const char *fmt, va_list ap)
{
  nbdkit_verror (fmt, ap);
}

/* nbdkit has no info level and shows debug only with -v: notes an
 * operator must see (recovery counts) go to stderr and the debug log. */
static void
sink_info (const char *fmt, va_list ap)
{
  va_list copy;
  va_copy (copy, ap);
  fprintf (stderr, "nbdkit: replicator: ");
  vfprintf (stderr, fmt, ap);
  fprintf (stderr, "\n");
  nbdkit_vdebug (fmt, copy);
  va_end (copy);
}

static void
sink_debug_quiet (const char *fmt, va_list ap)
{
  nbdkit_vdebug (fmt, ap);              /* rep_debugc decided already */
}

static void
replicator_load (void)
{
  struct report_sink s = { .error = sink_error, .debug = sink_debug_quiet, .info = sink_info };
  report_set_sink (&s);
  params = cfg_short_new ();
}

static void
replicator_unload (void)
{
  cfg_short_free (params);
  cfg_free (cfg);
}

static int
replicator_config (const char *key, const char *value)
{
  int r;

  if (!params)
    return -1;
  r = cfg_short_set (params, key, value);
  if (r == 1) {
    nbdkit_error ("unknown parameter '%s' (see nbdkit replicator --help)", key);
    return -1;
  }
  return r;
}

static int
replicator_config_complete (void)
{
  debug_flags ();
  cfg = cfg_short_finish (params);
  if (cfg)
    receiver = cfg->receiver;
  return cfg ? 0 : -1;
}

/* A receiver handles requests one at a time, across all connections, in
 * the order each connection's arrive (nbdkit reads a connection's next
 * request only once the previous one was answered): the log holds them in
 * that order, and a stream's fence is ordered with every request of the
 * connections it ends (none is half-way through while it runs). */
static int
replicator_thread_model (void)
{
  return receiver ? NBDKIT_THREAD_MODEL_SERIALIZE_ALL_REQUESTS : THREAD_MODEL;
}

#define replicator_config_help \
  "config=<FILE>            libconfig file (nbd-replicator.conf(5)); or the short form:\n" \
  "log=<PATH>               (required) replication log file or block device\n" \
  "log-size=<SIZE>          size when created (default 1G; suffixes s k m g t p e)\n" \
  "log-offset=<SIZE>        byte offset of the log in PATH (default 0)\n" \
  "log-mode=auto|create|open  (default auto: create only on a blank area)\n" \
  "local=<PATH>             (required) local leg: file or block device (site 0)\n" \
  "size=<SIZE>              device size (default: the local leg's size)\n" \
  "name=<NAME>              export name of the device (default \"default\")\n" \
  "remote=<URL|PATH>        remote leg (repeatable): nbd://, nbd+unix://, iscsi://, path\n" \
  "policy=sync|async        policy of the remote sites (default async)\n" \
  "local-policy=sync|async  site 0: async acks once logged, sync once on the local leg\n" \
  "fall-behind=\"ios N|size N|timeout T\"  throttle threshold of async remote sites\n" \
  "disconnect-timeout=<T>   a remote site that makes no progress this long is disconnected:\n" \
  "                         clients stop waiting for it (default 30s)\n" \
  "pull-ahead=<T>           a site keeping the log full this long goes to dirty-log mode\n" \
  "                         (default: disconnect-timeout)\n" \
  "request-timeout=<T>      a remote request unanswered this long drops the connection\n" \
  "                         (default: 2 x disconnect-timeout)\n" \
  "initial-sync=true|false  false: trust new remote legs to equal the device (default true:\n" \
  "                         a new remote site is copied online before it is fed from the log)\n" \
  "resync-rate=<SIZE>       resync copies per second, at most (default: no limit)\n" \
  "rate=<RATE>              bandwidth of each remote site's link, at most: bits (100Mbit)\n" \
  "                         or bytes (12MB/s) per second (default: no limit)\n" \
  "sync-deadline=<T>        with policy=sync: a write waits for a remote site at most T;\n" \
  "                         past it the site is behind (async) until caught up (default: none)\n" \
  "region-size=<SIZE>       dirty-log region size (default 64k)\n" \
  "dirty-log-dir=<DIR>      keep persistent dirty logs there (default: in memory)\n" \
  "queue-depth=<N>          requests in flight per leg (default 32)\n" \
  "direct-io=true|false     O_DIRECT on path legs (default true; false = page cache)\n" \
  "commit-interval=<T>      background group commit of the log (default 5ms)\n" \
  "control=<PATH>           control socket for replctl (default /run/nbd-replicator/control.sock)\n" \
  "on-event=<PATH>          program run on state changes (event in its environment)\n" \
  "metrics-listen=<HOST:PORT>  serve OpenMetrics at http://HOST:PORT/metrics\n" \
  "label=end|none           where every leg's label lives (default end: its last MiB or so)\n" \
  "local-label=end|none|<PATH>  the local leg's label (a file keeps the leg's full size)\n" \
  "takeover=yes             start as the primary on legs labelled as another primary's copies\n" \
  "failback=yes             one-shot: record what these legs hold that the new primary lacks,\n" \
  "                         label them copies, exit\n" \
  "receiver=yes             a DR site's receiver: keep each connection's requests in arrival\n" \
  "                         order, so that a primary streams to it (no round trip per epoch)"

static void
replicator_dump_plugin (void)
{
  printf ("replicator_version=%s\n", PACKAGE_VERSION);
  printf ("replicator_log_format=1\n");
  printf ("replicator_transports=path");
#ifdef HAVE_LIBNBD
  printf (",nbd");
#endif
#ifdef HAVE_LIBISCSI
  printf (",iscsi");
#endif
  printf ("\n");
  printf ("replicator_io_engine=io_uring,threads\n");
  printf ("replicator_short_form=log,log-size,log-offset,log-mode,local,size,name,remote,"
          "policy,local-policy,fall-behind,disconnect-timeout,pull-ahead,request-timeout,"
          "initial-sync,resync-rate,rate,sync-deadline,region-size,dirty-log-dir,"
          "queue-depth,direct-io,commit-interval,control,on-event,metrics-listen,"
          "label,local-label,takeover,failback,receiver\n");
}

static int
replicator_get_ready (void)
{
  /* Open the log and the legs and recover, before nbdkit forks: errors
   * reach the operator's terminal.  No threads yet. */
  rep = replicator_new (cfg);
  cfg = NULL;                      /* owned by rep now (freed on error too) */
  if (!rep)
    return -1;
  if (rep->cfg->failback) {
    /* A one-shot run: the record is written (failback.c); nothing to serve. */
    replicator_free (rep);
    exit (EXIT_SUCCESS);
  }
  ctl = control_open (rep, rep->cfg->control.socket, rep->cfg->control.group);
  if (!ctl)
    nbdkit_error ("warning: control socket %s is not available; replctl cannot reach "
                  "this instance", rep->cfg->control.socket);
  return 0;
}

static int
replicator_after_fork (void)
{
  if (replicator_start (rep) == -1)
    return -1;
  if (ctl && control_run (ctl) == -1) {
    control_stop (ctl);
    ctl = NULL;
  }
  return 0;
}

static void
replicator_cleanup (void)
{
  control_stop (ctl);
  ctl = NULL;
  replicator_stop (rep);
  replicator_free (rep);
  rep = NULL;
}

static int
replicator_list_exports (int readonly, int is_tls, struct nbdkit_exports *exports)
{
  size_t i;
  for (i = 0; i < rep->ndevs; i++)
    if (nbdkit_add_export (exports, rep->devs[i].name,
                           receiver ? RECEIVER_DESCRIPTION : "nbd-replicator virtual device") == -1)
      return -1;
  return 0;
}

static const char *
replicator_default_export (int readonly, int is_tls)
{
  return rep->devs[0].name;
}

static void *
replicator_open (int readonly)
{
  const char *name = nbdkit_export_name ();
  struct vdev *d = replicator_find (rep, name);
  struct rconn *c;

  if (!d) {
    nbdkit_error ("unknown export '%s' (this instance serves %zu device(s); see list_exports)",
                  name, rep->ndevs);
    return NULL;
  }
  if (!(c = calloc (1, sizeof *c))) {
    nbdkit_error ("calloc: %m");
    return NULL;
  }
  c->d = d;
  return c;
}

static void
replicator_close (void *handle)
{
  free (handle);
}

static const char *
replicator_export_description (void *handle)
{
  return receiver ? RECEIVER_DESCRIPTION : "nbd-replicator virtual device";
}

static inline struct vdev *
dev_of (void *handle)
{
  return ((struct rconn *) handle)->d;
}

static int64_t
replicator_get_size (void *handle)
{
  struct vdev *d = dev_of (handle);
  return (int64_t) d->size;
}

static int
replicator_block_size (void *handle, uint32_t *minimum, uint32_t *preferred, uint32_t *maximum)
{
  struct vdev *d = dev_of (handle);
  *minimum = d->block_size;
  *preferred = d->block_size > 4096 ? d->block_size : 4096;
  *maximum = d->max_request;
  return 0;
}

static int replicator_can_write (void *h) { return 1; }
static int replicator_can_flush (void *h) { return 1; }
static int replicator_can_fua (void *h) { return NBDKIT_FUA_NATIVE; }
static int replicator_can_trim (void *h) { return 1; }
static int replicator_can_zero (void *h) { return 1; }
static int replicator_can_fast_zero (void *h) { return 1; }
/* A flush makes the whole log durable, whatever connection sent it. */
static int replicator_can_multi_conn (void *h) { return 1; }

/* Every request is timed for the latency histograms (metrics): mono_ns.
 * A receiver's connection breaks at its first failed change. */
static int
timed (void *handle, enum lat_op op, uint64_t t0, int r)
{
  struct rconn *c = handle;
  rdev_observe (c->d, op, mono_ns () - t0, r == 0);
  if (r != 0 && receiver && op != LAT_READ && !c->broken) {
    c->broken = true;
    nbdkit_error ("receiver: a change failed; this connection takes no further changes (the "
                  "primary reconnects and resumes after what is logged here)");
  }
  return r;
}

/* A receiver's broken connection: nothing more is taken from it. */
static int
refused (void *handle)
{
  struct rconn *c = handle;

  if (c->gen && c->gen != __atomic_load_n (&c->d->fence_gen, __ATOMIC_ACQUIRE) && !c->broken) {
    c->broken = true;
    nbdkit_error ("receiver: a newer connection of the primary fenced this one: it takes no "
                  "further changes");
  }
  if (!c->broken)
    return 0;
  errno = EIO;
  nbdkit_error ("receiver: this connection broke at an earlier failed change: reconnect");
  return -1;
}

/* A receiver takes NBD CACHE requests: one of STREAM_FENCE_LEN bytes is a
 * stream's fence (stream.h), which ends older fenced connections of the
 * device; it carries no data, so a client's own CACHE taken for a fence
 * costs a primary a reconnect, never a write.  Others do nothing. */
static int
replicator_can_cache (void *handle)
{
  return receiver ? NBDKIT_CACHE_NATIVE : NBDKIT_CACHE_NONE;
}

static int
replicator_cache (void *handle, uint32_t count, uint64_t offset, uint32_t flags)
{
  struct rconn *c = handle;

  if (!receiver || count != STREAM_FENCE_LEN)
    return 0;
  c->gen = __atomic_add_fetch (&c->d->fence_gen, 1, __ATOMIC_ACQ_REL);
  c->broken = false;
  nbdkit_debug ("receiver: stream fence %" PRIu64 " on export '%s'", c->gen, c->d->name);
  return 0;
}

static int
replicator_pread (void *handle, void *buf, uint32_t count, uint64_t offset, uint32_t flags)
{
  uint64_t t0 = mono_ns ();
  return timed (handle, LAT_READ, t0, rdev_pread (dev_of (handle), buf, count, offset));
}

static int
replicator_pwrite (void *handle, const void *buf, uint32_t count, uint64_t offset, uint32_t flags)
{
  uint64_t t0 = mono_ns ();
  if (refused (handle))
    return -1;
  return timed (handle, LAT_WRITE, t0, rdev_pwrite (dev_of (handle), buf, count, offset, flags & NBDKIT_FLAG_FUA));
}

static int
replicator_zero (void *handle, uint32_t count, uint64_t offset, uint32_t flags)
{
  uint64_t t0 = mono_ns ();
  if (refused (handle))
    return -1;
  return timed (handle, LAT_ZERO, t0,
                rdev_zero (dev_of (handle), count, offset, flags & NBDKIT_FLAG_MAY_TRIM, flags & NBDKIT_FLAG_FUA));
}

static int
replicator_trim (void *handle, uint32_t count, uint64_t offset, uint32_t flags)
{
  uint64_t t0 = mono_ns ();
  if (refused (handle))
    return -1;
  return timed (handle, LAT_TRIM, t0, rdev_trim (dev_of (handle), count, offset, flags & NBDKIT_FLAG_FUA));
}

static int
replicator_flush (void *handle, uint32_t flags)
{
  struct vdev *d = dev_of (handle);
  uint64_t t0 = mono_ns ();
  if (refused (handle))
    return -1;
  __atomic_add_fetch (&d->counters.flushes, 1, __ATOMIC_RELAXED);
  return timed (handle, LAT_FLUSH, t0, rdev_flush (d->r));
}

static struct nbdkit_plugin plugin = {
  .name               = "replicator",
  .longname           = "nbd-replicator: replicated virtual block devices",
  .version            = PACKAGE_VERSION,
  .load               = replicator_load,
  .unload             = replicator_unload,
  .config             = replicator_config,
  .config_complete    = replicator_config_complete,
  .config_help        = replicator_config_help,
  .magic_config_key   = "config",
  .dump_plugin        = replicator_dump_plugin,
  .get_ready          = replicator_get_ready,
  .after_fork         = replicator_after_fork,
  .cleanup            = replicator_cleanup,
  .list_exports       = replicator_list_exports,
  .default_export     = replicator_default_export,
  .open               = replicator_open,
  .close              = replicator_close,
  .thread_model       = replicator_thread_model,
  .export_description = replicator_export_description,
  .get_size           = replicator_get_size,
  .block_size         = replicator_block_size,
  .can_write          = replicator_can_write,
  .can_flush          = replicator_can_flush,
  .can_fua            = replicator_can_fua,
  .can_trim           = replicator_can_trim,
  .can_zero           = replicator_can_zero,
  .can_fast_zero      = replicator_can_fast_zero,
  .can_multi_conn     = replicator_can_multi_conn,
  .can_cache          = replicator_can_cache,
  .cache              = replicator_cache,
  .pread              = replicator_pread,
  .pwrite             = replicator_pwrite,
  .zero               = replicator_zero,
  .trim               = replicator_trim,
  .flush              = replicator_flush,
  .errno_is_preserved = 1,
};

NBDKIT_REGISTER_PLUGIN (plugin)
