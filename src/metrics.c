/* metrics.c: OpenMetrics text (replctl metrics, and an optional HTTP
 * endpoint, metrics = { listen = "HOST:PORT"; }).
 *
 * The figures are those of the status document (one source for both):
 * per site backlog, RPO, link and mode, resync progress; log fill and
 * syncs; per device request counts and latency histograms; per leg state,
 * errors and dirty regions; event counts.  Names start with nbd_replicator_;
 * counters end in _total, as OpenMetrics wants. */
#include <config.h>

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <json-c/json.h>

#include "cfg.h"
#include "event.h"
#include "io.h"
#include "replicator.h"
#include "report.h"
#include "units.h"

/* Upper bounds of the latency buckets, seconds (the last bucket is +Inf). */
const double lat_bounds[LAT_BUCKETS] = {
  0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01,
  0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10,
};

static const char *const lat_names[LAT_OPS] = { "read", "write", "zero", "trim", "flush" };

const char *
lat_op_name (enum lat_op op)
{
  return op < LAT_OPS ? lat_names[op] : "unknown";
}

void
rdev_observe (struct vdev *d, enum lat_op op, uint64_t ns, bool ok)
{
  unsigned i;
  double s = (double) ns / 1e9;

  for (i = 0; i < LAT_BUCKETS && s > lat_bounds[i]; i++)
    ;
  if (i < LAT_BUCKETS)
    __atomic_add_fetch (&d->lat[op].bucket[i], 1, __ATOMIC_RELAXED);
  __atomic_add_fetch (&d->lat[op].sum_ns, ns, __ATOMIC_RELAXED);
  __atomic_add_fetch (&d->lat[op].count, 1, __ATOMIC_RELAXED);
  if (!ok)
    __atomic_add_fetch (&d->lat[op].errors, 1, __ATOMIC_RELAXED);
}

/* ---- the text --------------------------------------------------------------- */

struct buf {
  char *p;
  size_t len, cap;
  bool oom;
};

static void __attribute__ ((format (printf, 2, 3)))
put (struct buf *b, const char *fmt, ...)
{
  va_list ap;
  int n;

  if (b->oom)
    return;
  if (!b->p && !(b->p = malloc (b->cap = 16384))) {
    b->oom = true;
    return;
  }
  for (;;) {
    va_start (ap, fmt);
    n = vsnprintf (b->p + b->len, b->cap - b->len, fmt, ap);
    va_end (ap);
    if (n < 0) {
      b->oom = true;
      return;
    }
    if ((size_t) n < b->cap - b->len) {
      b->len += (size_t) n;
      return;
    }
    size_t cap = (b->cap + (size_t) n + 1) * 2;
    char *p = realloc (b->p, cap);
    if (!p) {
      b->oom = true;
      return;
    }
    b->p = p;
    b->cap = cap;
  }
}

/* A label value: backslash, quote and newline escaped. */
static const char *
esc (const char *s, char *out, size_t len)
{
  size_t o = 0;
  for (; s && *s && o + 3 < len; s++) {
    if (*s == '\\' || *s == '"') {
      out[o++] = '\\';
      out[o++] = *s;
    }
    else if (*s == '\n') {
      out[o++] = '\\';
      out[o++] = 'n';
    }
    else
      out[o++] = *s;
  }
  out[o] = '\0';
  return out;
}

static void
family (struct buf *b, const char *name, const char *type, const char *help)
{
  put (b, "# TYPE nbd_replicator_%s %s\n# HELP nbd_replicator_%s %s\n", name, type, name, help);
}

static int64_t
jint (json_object *o, const char *k)
{
  json_object *v;
  return json_object_object_get_ex (o, k, &v) ? json_object_get_int64 (v) : 0;
}

static double
jdbl (json_object *o, const char *k)
{
  json_object *v;
  return json_object_object_get_ex (o, k, &v) ? json_object_get_double (v) : 0;
}

static bool
jbool (json_object *o, const char *k)
{
  json_object *v;
  return json_object_object_get_ex (o, k, &v) && json_object_get_boolean (v);
}

static const char *
jstr_of (json_object *o, const char *k)
{
  json_object *v;
  return json_object_object_get_ex (o, k, &v) ? json_object_get_string (v) : "";
}

static json_object *
jget (json_object *o, const char *k)
{
  json_object *v;
  return json_object_object_get_ex (o, k, &v) ? v : NULL;
}

/* A family with one sample per site, from the site's status key: a gauge or
 * a counter (integer or double), or a gauge sampled only where the status
 * has a value (null: no sample). */
enum ps_kind { PS_GAUGE, PS_COUNTER, PS_GAUGE_DOUBLE, PS_GAUGE_KNOWN };
struct per_site_def {
  const char *name, *key;
  enum ps_kind kind;
  const char *help;
};

static void
per_site (struct buf *b, json_object *sites, const struct per_site_def *d)
{
  size_t i, n = json_object_array_length (sites);
  bool counter = d->kind == PS_COUNTER;

  family (b, d->name, counter ? "counter" : "gauge", d->help);
  for (i = 0; i < n; i++) {
    json_object *s = json_object_array_get_idx (sites, i), *v = jget (s, d->key);
    int id = (int) jint (s, "id");
    if (d->kind == PS_GAUGE_KNOWN) {
      if (v)
        put (b, "nbd_replicator_%s{site=\"%d\"} %.6f\n", d->name, id, json_object_get_double (v));
    }
    else if (d->kind == PS_GAUGE_DOUBLE)
      put (b, "nbd_replicator_%s{site=\"%d\"} %.6f\n", d->name, id, jdbl (s, d->key));
    else
      put (b, "nbd_replicator_%s%s{site=\"%d\"} %lld\n", d->name, counter ? "_total" : "", id,
           (long long) jint (s, d->key));
  }
}

static void
per_site_table (struct buf *b, json_object *sites, const struct per_site_def *d, size_t n)
{
  size_t i;
  for (i = 0; i < n; i++)
    per_site (b, sites, &d[i]);
}

/* The sites' progress, and their links: rate, what they carried, the catch-up. */
static const struct per_site_def site_defs[] = {
  { "site_backlog_entries", "backlog_entries", PS_GAUGE, "Log entries the site has not applied." },
  { "site_backlog_bytes", "backlog_bytes", PS_GAUGE, "Bytes of log entries the site has not applied." },
  { "site_rpo_seconds", "rpo_seconds", PS_GAUGE_DOUBLE,
    "Age of the oldest log entry the site has not applied." },
  { "site_applied_seq", "applied_seq", PS_GAUGE, "Newest log sequence number durable at the site." },
  { "site_disconnects", "disconnects", PS_COUNTER,
    "Times the site made no progress for disconnect_timeout." },
  { "site_rate_limit_bytes_per_second", "rate_limit", PS_GAUGE,
    "The site's rate: bytes per second sent to its connections, at most (0: no limit)." },
  { "site_link_sent_bytes", "link_bytes_sent", PS_COUNTER,
    "Bytes on the wire (payload and request headers) the site's remotes acknowledged." },
  { "site_log_sent_bytes", "log_bytes_sent", PS_COUNTER,
    "Payload bytes of log writes the site's legs took (coalesced: the pieces sent)." },
  { "site_coalesced_bytes", "coalesced_bytes", PS_COUNTER,
    "Payload bytes of log writes not sent: a later write of the same epoch overwrote them." },
  { "site_coalesced_entries", "coalesced_entries", PS_COUNTER,
    "Log entries not sent at all: later entries of the same epoch overwrote them." },
  { "site_stream", "stream", PS_GAUGE,
    "1 while the site streams to a receiver (no round trip per epoch), else 0." },
  { "site_stream_records", "stream_records", PS_COUNTER,
    "Stream records sent to the site's receiver (one per epoch)." },
  { "site_stream_resumes", "stream_resumes", PS_COUNTER,
    "Connections to the site's receiver that started again after its stream record." },
  { "site_link_bytes_per_second", "link_bytes_per_second", PS_GAUGE_KNOWN,
    "Bytes per second the site's connections carried over the last 5 s." },
  { "site_catchup_seconds", "catchup_seconds", PS_GAUGE_KNOWN,
    "Projected time to send what the site lacks (no sample: nothing, or unknown)." },
};

/* The latency budget of sync sites (sync_deadline). */
static void
sync_metrics (struct buf *b, json_object *sites)
{
  size_t i, n = json_object_array_length (sites);

  family (b, "site_sync_behind", "gauge", "1 while a sync site is behind its sync_deadline "
          "(it missed it and has not caught up: clients do not wait for it).");
  for (i = 0; i < n; i++) {
    json_object *s = json_object_array_get_idx (sites, i);
    const char *st = jstr_of (s, "sync_state");     /* null for an async site */
    put (b, "nbd_replicator_site_sync_behind{site=\"%d\"} %d\n", (int) jint (s, "id"),
         st && !strncmp (st, "behind", 6));
  }
  static const struct per_site_def misses = {
    "site_sync_deadline_misses", "sync_deadline_misses", PS_COUNTER,
    "Client waits for the sync site that reached its sync_deadline (acknowledged without it)."
  };
  per_site (b, sites, &misses);
}

static void
sites_metrics (struct buf *b, json_object *sites)
{
  static const char *const modes[] = { "log", "dirty", "resync" };
  size_t i, k, n = json_object_array_length (sites);

  per_site_table (b, sites, site_defs, sizeof site_defs / sizeof site_defs[0]);

  family (b, "site_connected", "gauge", "1 while every leg of the site is reachable and it makes progress.");
  for (i = 0; i < n; i++) {
    json_object *s = json_object_array_get_idx (sites, i);
    const char *link = jstr_of (s, "link");
    put (b, "nbd_replicator_site_connected{site=\"%d\"} %d\n", (int) jint (s, "id"),
         !strcmp (link, "local") || !strcmp (link, "connected"));
  }
  family (b, "site_behind", "gauge", "1 while the site is over its fall_behind threshold (clients wait).");
  for (i = 0; i < n; i++) {
    json_object *s = json_object_array_get_idx (sites, i);
    put (b, "nbd_replicator_site_behind{site=\"%d\"} %d\n", (int) jint (s, "id"), jbool (s, "behind"));
  }
  sync_metrics (b, sites);
  family (b, "site_mode", "stateset", "Replication mode of the site.");
  for (i = 0; i < n; i++) {
    json_object *s = json_object_array_get_idx (sites, i);
    for (k = 0; k < 3; k++)
      put (b, "nbd_replicator_site_mode{site=\"%d\",nbd_replicator_site_mode=\"%s\"} %d\n",
           (int) jint (s, "id"), modes[k], !strcmp (jstr_of (s, "mode"), modes[k]));
  }

  /* Resync progress (at site 0: restores of a local leg). */
  {
    static const struct { const char *name, *type, *help, *key; } rs[] = {
      { "resync_active", "gauge", "1 while a resync (or a restore, at site 0) copies regions.", "active" },
      { "resync_regions", "gauge", "Regions of the current or last resync.", "regions_total" },
      { "resync_regions_left", "gauge", "Regions still to copy.", "regions_left" },
      { "resync_bytes", "gauge", "Bytes copied (data and zeroes) by the current or last resync.", NULL },
      { "resync_eta_seconds", "gauge", "Estimated time to the end of the resync (-1: unknown).", "eta_seconds" },
      { "resyncs_finished", "counter", "Resyncs finished since start.", "finished" },
    };
    for (k = 0; k < sizeof rs / sizeof rs[0]; k++) {
      family (b, rs[k].name, rs[k].type, rs[k].help);
      for (i = 0; i < n; i++) {
        json_object *s = json_object_array_get_idx (sites, i), *r = jget (s, "resync");
        const char *suffix = strcmp (rs[k].type, "counter") ? "" : "_total";
        if (!r)
          continue;
        put (b, "nbd_replicator_%s%s{site=\"%d\"} ", rs[k].name, suffix, (int) jint (s, "id"));
        if (!rs[k].key)
          put (b, "%lld\n", (long long) (jint (r, "bytes_copied") + jint (r, "bytes_zeroed")));
        else if (!strcmp (rs[k].key, "active"))
          put (b, "%d\n", jbool (r, "active"));
        else if (!strcmp (rs[k].key, "eta_seconds"))
          put (b, "%.3f\n", jdbl (r, "eta_seconds"));
        else
          put (b, "%lld\n", (long long) jint (r, rs[k].key));
      }
    }
  }
}

/* The family NAME (a counter): per device and operation, the requests
 * (ERRORS false) or the failed ones. */
static void
request_counts (struct buf *b, struct replicator *r, const char *name, const char *help,
                bool errors)
{
  char e1[256];
  size_t i;
  unsigned op;

  family (b, name, "counter", help);
  for (i = 0; i < r->ndevs; i++)
    for (op = 0; op < LAT_OPS; op++) {
      const struct vdev_latency *l = &r->devs[i].lat[op];
      put (b, "nbd_replicator_%s_total{device=\"%s\",op=\"%s\"} %llu\n", name,
           esc (r->devs[i].name, e1, sizeof e1), lat_op_name (op),
           (unsigned long long) (errors ? __atomic_load_n (&l->errors, __ATOMIC_RELAXED)
                                        : __atomic_load_n (&l->count, __ATOMIC_RELAXED)));
    }
}

/* Requests and their latency, from the devices themselves. */
static void
requests_metrics (struct replicator *r, struct buf *b)
{
  size_t i;
  char e1[256];
  unsigned op, k;

  request_counts (b, r, "requests", "Client requests by device and operation.", false);
  request_counts (b, r, "request_errors", "Client requests that failed.", true);
  family (b, "request_duration_seconds", "histogram", "Time from a client request to its reply.");
  for (i = 0; i < r->ndevs; i++)
    for (op = 0; op < LAT_OPS; op++) {
      struct vdev *d = &r->devs[i];
      uint64_t cum = 0, count = __atomic_load_n (&d->lat[op].count, __ATOMIC_RELAXED);
      uint64_t sum = __atomic_load_n (&d->lat[op].sum_ns, __ATOMIC_RELAXED);
      esc (d->name, e1, sizeof e1);
      for (k = 0; k < LAT_BUCKETS; k++) {
        cum += __atomic_load_n (&d->lat[op].bucket[k], __ATOMIC_RELAXED);
        if (cum > count)             /* read while a request is being counted */
          cum = count;
        put (b, "nbd_replicator_request_duration_seconds_bucket{device=\"%s\",op=\"%s\",le=\"%g\"} %llu\n",
             e1, lat_op_name (op), lat_bounds[k], (unsigned long long) cum);
      }
      put (b, "nbd_replicator_request_duration_seconds_bucket{device=\"%s\",op=\"%s\",le=\"+Inf\"} %llu\n",
           e1, lat_op_name (op), (unsigned long long) count);
      put (b, "nbd_replicator_request_duration_seconds_count{device=\"%s\",op=\"%s\"} %llu\n",
           e1, lat_op_name (op), (unsigned long long) count);
      put (b, "nbd_replicator_request_duration_seconds_sum{device=\"%s\",op=\"%s\"} %.9f\n",
           e1, lat_op_name (op), (double) sum / 1e9);
    }
}

static void
devices_metrics (struct replicator *r, struct buf *b, json_object *devs)
{
  size_t i, j, n = json_object_array_length (devs);
  char e1[256];
  unsigned k;

  {
    static const struct { const char *name, *help, *key; } dv[] = {
      { "device_size_bytes", "Size of the virtual device.", "size" },
      { "device_local_out", "1 while the local leg is out of service.", "local_out" },
      { "device_served_from_site", "Site whose leg serves reads (0: the local leg).", "served_from" },
      { "device_unapplied_extents", "Extents of the log not yet on the local leg.", "unapplied_extents" },
    };
    for (k = 0; k < sizeof dv / sizeof dv[0]; k++) {
      family (b, dv[k].name, "gauge", dv[k].help);
      for (i = 0; i < n; i++) {
        json_object *d = json_object_array_get_idx (devs, i);
        put (b, "nbd_replicator_%s{device=\"%s\"} %lld\n", dv[k].name,
             esc (jstr_of (d, "name"), e1, sizeof e1),
             !strcmp (dv[k].key, "local_out") ? (long long) jbool (d, "local_out")
                                               : (long long) jint (d, dv[k].key));
      }
    }
  }
  {
    /* Table-driven like the sites' resync figures: the same loop shape over
     * another part of the status document (each leg of each device). */
    static const struct { const char *name, *type, *help, *key; } lg[] = {
      { "leg_consistent", "gauge", "1 while the leg holds a consistent state (replicating, or behind "
        "or away in log mode without in-doubt writes).", "consistent" },
      { "leg_errors", "counter", "I/O errors of the leg.", "errors" },
      { "leg_dirty_regions", "gauge", "Regions the leg is known to miss (dirty log).", "dirty_regions" },
    };
    for (k = 0; k < sizeof lg / sizeof lg[0]; k++) {
      family (b, lg[k].name, lg[k].type, lg[k].help);
      for (i = 0; i < n; i++) {
        json_object *d = json_object_array_get_idx (devs, i), *legs = jget (d, "legs");
        size_t nl = legs ? json_object_array_length (legs) : 0;
        esc (jstr_of (d, "name"), e1, sizeof e1);
        for (j = 0; j < nl; j++) {
          json_object *l = json_object_array_get_idx (legs, j);
          put (b, "nbd_replicator_%s%s{device=\"%s\",site=\"%d\"} %lld\n", lg[k].name,
               strcmp (lg[k].type, "counter") ? "" : "_total", e1, (int) jint (l, "site"),
               !strcmp (lg[k].key, "consistent") ? (long long) jbool (l, "consistent")
                                                  : (long long) jint (l, lg[k].key));
        }
      }
    }
  }
  requests_metrics (r, b);
}


char *
replicator_metrics (struct replicator *r)
{
  json_object *st = replicator_status_obj (r), *log = jget (st, "log");
  json_object *sites = jget (st, "sites"), *devs = jget (st, "devices");
  struct buf b = { 0 };
  char e1[256], e2[64];
  unsigned ev;

  family (&b, "build", "info", "Version and I/O engine.");
  put (&b, "nbd_replicator_build_info{version=\"%s\",engine=\"%s\"} 1\n",
       esc (jstr_of (st, "version"), e2, sizeof e2), esc (jstr_of (st, "engine"), e1, sizeof e1));
  family (&b, "start_time_seconds", "gauge", "Unix time the instance started.");
  put (&b, "nbd_replicator_start_time_seconds %lld\n", (long long) jint (st, "started"));
  if (log) {
    family (&b, "log_healthy", "gauge", "0 once the log could not be made durable (flushes fail).");
    put (&b, "nbd_replicator_log_healthy %d\n", !strcmp (jstr_of (log, "health"), "ok"));
    family (&b, "log_size_bytes", "gauge", "Size of the replication log.");
    put (&b, "nbd_replicator_log_size_bytes %lld\n", (long long) jint (log, "size"));
    family (&b, "log_entries", "gauge", "Entries in the log.");
    put (&b, "nbd_replicator_log_entries %lld\n", (long long) jint (log, "entries"));
    family (&b, "log_fill_ratio", "gauge", "Fraction of the log's data blocks in use.");
    put (&b, "nbd_replicator_log_fill_ratio %.4f\n", jdbl (log, "fill_percent") / 100);
    family (&b, "log_syncs", "counter", "Syncs of the log (group commits).");
    put (&b, "nbd_replicator_log_syncs_total %lld\n", (long long) jint (log, "syncs"));
    family (&b, "log_full_waits", "counter", "Writers that waited for log space.");
    put (&b, "nbd_replicator_log_full_waits_total %lld\n", (long long) jint (log, "full_waits"));
  }
  if (sites)
    sites_metrics (&b, sites);
  if (devs)
    devices_metrics (r, &b, devs);
  family (&b, "events", "counter", "State changes (see on_event in nbd-replicator.conf(5)).");
  for (ev = 0; ev < EV_COUNT; ev++)
    put (&b, "nbd_replicator_events_total{event=\"%s\"} %llu\n", event_name (ev),
         (unsigned long long) event_count (ev));
  family (&b, "event_hook_failures", "counter", "on_event runs that failed or timed out.");
  put (&b, "nbd_replicator_event_hook_failures_total %llu\n", (unsigned long long) event_hook_failures ());
  put (&b, "# EOF\n");
  json_object_put (st);
  if (b.oom) {
    free (b.p);
    return NULL;
  }
  return b.p;
}

/* ---- the HTTP endpoint -------------------------------------------------------- */

static struct {
  struct replicator *r;
  int fd;
  int stop_pipe[2];
  pthread_t thread;
  bool running;
} http = { .fd = -1, .stop_pipe = { -1, -1 } };

int
metrics_http_open (struct replicator *r, const char *listen_on)
{
  char host[64];
  int port, one = 1;
  struct sockaddr_storage ss;
  socklen_t sl;

  if (cfg_parse_listen (listen_on, host, sizeof host, &port) == -1) {
    rep_error ("metrics.listen %s: expected HOST:PORT", listen_on);
    return -1;
  }
  memset (&ss, 0, sizeof ss);
  if (strchr (host, ':')) {
    struct sockaddr_in6 *a = (struct sockaddr_in6 *) &ss;
    a->sin6_family = AF_INET6;
    a->sin6_port = htons ((uint16_t) port);
    inet_pton (AF_INET6, host, &a->sin6_addr);
    sl = sizeof *a;
  }
  else {
    struct sockaddr_in *a = (struct sockaddr_in *) &ss;
    a->sin_family = AF_INET;
    a->sin_port = htons ((uint16_t) port);
    inet_pton (AF_INET, host, &a->sin_addr);
    sl = sizeof *a;
  }
  http.fd = socket (ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (http.fd == -1 || setsockopt (http.fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) == -1 ||
      bind (http.fd, (struct sockaddr *) &ss, sl) == -1 || listen (http.fd, 16) == -1) {
    rep_error ("metrics.listen %s: %m", listen_on);
    if (http.fd != -1)
      close (http.fd);
    http.fd = -1;
    return -1;
  }
  http.r = r;
  rep_info ("metrics at http://%s/metrics", listen_on);
  return 0;
}

#define HTTP_TIMEOUT_MS 2000     /* a whole request head, and a whole reply */

static void
http_reply (int fd, const char *status, const char *type, const char *body)
{
  uint64_t deadline = mono_ns () / 1000000u + HTTP_TIMEOUT_MS;
  char head[256];
  size_t blen = strlen (body), off = 0;
  int n = snprintf (head, sizeof head, "HTTP/1.1 %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\n"
                    "Connection: close\r\n\r\n", status, type, blen);
  struct { const char *p; size_t len; } parts[2] = { { head, (size_t) n }, { body, blen } };
  int i;

  for (i = 0; i < 2; i++)
    for (off = 0; off < parts[i].len; ) {
      ssize_t w;
      if (!io_wait_until (fd, POLLOUT, deadline, http.stop_pipe[0]))
        return;                          /* a client that does not read: dropped */
      w = send (fd, parts[i].p + off, parts[i].len - off, MSG_NOSIGNAL | MSG_DONTWAIT);
      if (w <= 0 && errno != EAGAIN && errno != EINTR)
        return;
      if (w > 0)
        off += (size_t) w;
    }
}

static void
http_serve (int fd)
{
  char req[2048];
  size_t got = 0;
  uint64_t deadline = mono_ns () / 1000000u + HTTP_TIMEOUT_MS;

  req[0] = '\0';
  /* The request head, in 2 s at most (all of it, not per byte). */
  while (got < sizeof req - 1 && !strstr (req, "\r\n\r\n") && !strstr (req, "\n\n")) {
    ssize_t n;
    if (!io_wait_until (fd, POLLIN, deadline, http.stop_pipe[0]))
      return;
    n = recv (fd, req + got, sizeof req - 1 - got, MSG_DONTWAIT);
    if (n <= 0)
      return;
    got += (size_t) n;
    req[got] = '\0';
  }
  if (strncmp (req, "GET ", 4) != 0) {
    http_reply (fd, "405 Method Not Allowed", "text/plain", "only GET /metrics\n");
    return;
  }
  if (strncmp (req + 4, "/metrics ", 9) != 0 && strncmp (req + 4, "/metrics?", 9) != 0) {
    http_reply (fd, "404 Not Found", "text/plain", "metrics are at /metrics\n");
    return;
  }
  char *text = replicator_metrics (http.r);
  if (!text) {
    http_reply (fd, "500 Internal Server Error", "text/plain", "out of memory\n");
    return;
  }
  http_reply (fd, "200 OK", "application/openmetrics-text; version=1.0.0; charset=utf-8", text);
  free (text);
}

static void *
http_thread (void *arg)
{
  (void) arg;
  for (;;) {
    int c = io_accept_next (http.fd, http.stop_pipe[0]);
    if (c == -1)
      break;
    http_serve (c);
    close (c);
  }
  return NULL;
}

int
metrics_http_start (void)
{
  int e;

  if (http.fd == -1 || http.running)
    return 0;
  if (pipe2 (http.stop_pipe, O_CLOEXEC) == -1) {
    rep_error ("metrics: pipe: %m");
    return -1;
  }
  if ((e = pthread_create (&http.thread, NULL, http_thread, NULL)) != 0) {
    errno = e;
    rep_error ("metrics: cannot start the HTTP thread: %m");
    return -1;
  }
  http.running = true;
  return 0;
}

void
metrics_http_stop (void)
{
  if (http.running) {
    if (write (http.stop_pipe[1], "x", 1) != 1)
      rep_debugc (REP_DBG_CONTROL, "metrics: stop pipe: %m");
    pthread_join (http.thread, NULL);
    http.running = false;
  }
  if (http.fd != -1)
    close (http.fd);
  if (http.stop_pipe[0] != -1) {
    close (http.stop_pipe[0]);
    close (http.stop_pipe[1]);
  }
  http.fd = http.stop_pipe[0] = http.stop_pipe[1] = -1;
}
