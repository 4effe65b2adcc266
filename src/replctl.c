/* replctl: control a running nbd-replicator instance over its control
 * socket (journal-replay: the leg itself, replctl-journal.c).  See replctl(8).  Exit status: 0 success, 1 refused or failed
 * operation (or instance unreachable), 2 bad usage. */
#include <config.h>

#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <json-c/json.h>

#include "cfg.h"
#include "replctl-journal.h"
#include "units.h"

static void
usage (FILE *f)
{
  fprintf (f,
           "usage: replctl [--socket PATH | -i INSTANCE] COMMAND\n"
           "commands:\n"
           "  status [--json]     state of the log, sites, devices and legs\n"
           "  metrics             the same figures in the OpenMetrics text format\n"
           "  resync DEVICE SITE [--full] [--wait]\n"
           "                      copy the leg's dirty regions (--full: every region)\n"
           "  pause SITE          stop feeding a remote site (clients stop waiting for it)\n"
           "  resume SITE         feed it again; it catches up from the log\n"
           "  policy SITE sync|async [--fall-behind SPEC]\n"
           "                      change a site's policy (\"ios N\", \"size N\", \"timeout T\", none)\n"
           "  verify DEVICE SITE [--mark] [--wait]\n"
           "                      compare the leg with the device, region by region\n"
           "                      (--mark: copy the differing regions); exit 1 if any differ\n"
           "  restore DEVICE --from SITE [--wait]\n"
           "                      rebuild a failed local leg from SITE, online\n"
           "  discard SITE        split brain: SITE's changes are discarded, its legs become\n"
           "                      copies of this primary (only the regions either side\n"
           "                      changed are copied when both have records)\n"
           "  switchover [--timeout SECONDS]\n"
           "                      planned switchover: refuse writes (EROFS), drain every\n"
           "                      site, label every leg handed over; read-only after\n"
           "  journal-replay LEG  offline: replay the journal of a leg (a path, or an\n"
           "                      nbd:// or nbd+unix:// URI) so that it holds whole batches\n"
           "options:\n"
           "  -s, --socket PATH   control socket (default /run/nbd-replicator/control.sock,\n"
           "                      or $XDG_RUNTIME_DIR/nbd-replicator/control.sock when not root)\n"
           "  -i, --instance NAME use /run/nbd-replicator/NAME.sock\n"
           "  -h, --help          this text\n");
}

/* Send one command, return the reply (malloc'd) or NULL with a message. */
static char *
request (const char *path, const char *cmd)
{
  struct sockaddr_un sa = { .sun_family = AF_UNIX };
  size_t cap = 65536, len = 0;
  char *buf;
  int fd;

  if (strlen (path) >= sizeof sa.sun_path) {
    fprintf (stderr, "replctl: socket path too long: %s\n", path);
    return NULL;
  }
  strcpy (sa.sun_path, path);
  fd = socket (AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd == -1 || connect (fd, (struct sockaddr *) &sa, sizeof sa) == -1) {
    fprintf (stderr, "replctl: cannot reach the instance at %s: %s\n", path, strerror (errno));
    if (fd >= 0)
      close (fd);
    return NULL;
  }
  if (dprintf (fd, "%s\n", cmd) < 0 || !(buf = malloc (cap))) {
    fprintf (stderr, "replctl: %s: %s\n", path, strerror (errno));
    close (fd);
    return NULL;
  }
  for (;;) {
    ssize_t r;
    if (len + 1 == cap) {
      char *n = realloc (buf, cap *= 2);
      if (!n) {
        free (buf);
        close (fd);
        return NULL;
      }
      buf = n;
    }
    r = read (fd, buf + len, cap - 1 - len);
    if (r < 0 && errno == EINTR)
      continue;
    if (r <= 0)
      break;
    len += (size_t) r;
  }
  close (fd);
  buf[len] = 0;
  return buf;
}

static int64_t
jint (json_object *o, const char *k)
{
  json_object *v;
  return json_object_object_get_ex (o, k, &v) ? json_object_get_int64 (v) : 0;
}

static const char *
jstr (json_object *o, const char *k)
{
  json_object *v;
  const char *s = json_object_object_get_ex (o, k, &v) && v ? json_object_get_string (v) : NULL;
  return s ? s : "";
}

/* A site's link: throughput, rate, projected catch-up (sites with
 * connections only). */
static void
print_link (json_object *s)
{
  json_object *v, *c;
  char b1[64], b2[64];

  if (!json_object_object_get_ex (s, "link_bytes_per_second", &v) || !v)
    return;
  units_format_rate ((uint64_t) json_object_get_int64 (v), b1, sizeof b1);
  units_format_rate ((uint64_t) jint (s, "rate_limit"), b2, sizeof b2);
  printf ("  link carried %s over the last 5 s, rate limit %s", jint (s, "link_bytes_sent") &&
          json_object_get_int64 (v) ? b1 : "nothing", b2);
  if (json_object_object_get_ex (s, "catchup_seconds", &c) && c)
    printf (", catch-up in %.1f s", json_object_get_double (c));
  printf ("\n");
  if (jint (s, "coalesced_bytes")) {
    char b3[32], b4[32];
    printf ("  coalesced within epochs: %s of log writes not sent (%s sent)\n",
            units_format_size ((uint64_t) jint (s, "coalesced_bytes"), b3, sizeof b3),
            units_format_size ((uint64_t) jint (s, "log_bytes_sent"), b4, sizeof b4));
  }
}

/* Streaming to a receiver (issue 16): while the site streams, and after
 * it did (its connection to the receiver is down or being checked). */
static void
print_stream (json_object *s)
{
  json_object *v;
  bool on = json_object_object_get_ex (s, "stream", &v) && json_object_get_boolean (v);

  if (!on && !jint (s, "stream_records"))
    return;
  printf ("  %s%" PRId64 " records, %" PRId64 " resumes)\n",
          on ? "streaming to a receiver (" : "not streaming now (streamed to a receiver before: ",
          jint (s, "stream_records"), jint (s, "stream_resumes"));
}

/* A sync site's latency budget (sites with a sync_deadline only). */
static void
print_sync (json_object *s)
{
  if (!jint (s, "sync_deadline_ms"))
    return;
  printf ("  sync_deadline %" PRId64 " ms: %s, %" PRId64 " misses, behind %" PRId64 " times\n",
          jint (s, "sync_deadline_ms"), !strncmp (jstr (s, "sync_state"), "behind", 6) ?
          "BEHIND (deadline missed; clients do not wait for it until it has caught up)" :
          *jstr (s, "sync_state") ? jstr (s, "sync_state") : "not used (the policy is async)",
          jint (s, "sync_deadline_misses"), jint (s, "sync_behind_count"));
}

static void
print_status (json_object *st)
{
  json_object *log, *sites, *devs;
  char b1[32];
  size_t i, j;

  if (json_object_object_get_ex (st, "log", &log)) {
    json_object *fill;
    double f = json_object_object_get_ex (log, "fill_percent", &fill) ? json_object_get_double (fill) : 0;
    printf ("log %s: %s, %s, %.1f%% full, %" PRId64 " entries, durable seq %" PRId64
            ", epoch %" PRId64 ", engine %s\n",
            jstr (log, "path"), jstr (log, "health"),
            units_format_size ((uint64_t) jint (log, "size"), b1, sizeof b1), f,
            jint (log, "entries"), jint (log, "durable_seq"), jint (log, "epoch"), jstr (st, "engine"));
  }
  if (*jstr (st, "role") && strcmp (jstr (st, "role"), "primary")) {
    json_object *hs;
    printf ("role %s: read-only (writes fail with EROFS)", jstr (st, "role"));
    if (json_object_object_get_ex (st, "handover_seq", &hs))
      printf (", handed over at seq %" PRId64, json_object_get_int64 (hs));
    printf ("\n");
  }
  if (json_object_object_get_ex (st, "sites", &sites))
    for (i = 0; i < json_object_array_length (sites); i++) {
      json_object *s = json_object_array_get_idx (sites, i), *v;
      double rpo = json_object_object_get_ex (s, "rpo_seconds", &v) ? json_object_get_double (v) : 0;
      if (jint (s, "id") == 0) {
        printf ("site 0: %s, link local, applied seq %" PRId64 ", backlog %" PRId64 " entries\n",
                jstr (s, "policy"), jint (s, "applied_seq"), jint (s, "backlog_entries"));
        continue;
      }
      printf ("site %" PRId64 ": %s%s%s, link %s, %s mode, applied seq %" PRId64 ", backlog %" PRId64
              " entries (%s, RPO %.1f s)%s\n",
              jint (s, "id"), jstr (s, "policy"),
              strcmp (jstr (s, "fall_behind"), "none") ? ", fall_behind " : "",
              strcmp (jstr (s, "fall_behind"), "none") ? jstr (s, "fall_behind") : "",
              jstr (s, "link"), jstr (s, "mode"), jint (s, "applied_seq"), jint (s, "backlog_entries"),
              units_format_size ((uint64_t) jint (s, "backlog_bytes"), b1, sizeof b1), rpo,
              json_object_object_get_ex (s, "behind", &v) && json_object_get_boolean (v) ? ", BEHIND" : "");
      if (json_object_object_get_ex (s, "consistent_point", &v) && v)
        printf ("  consistent at seq %" PRId64 "%s%s\n", jint (v, "seq"),
                *jstr (v, "time") ? ", logged " : "", jstr (v, "time"));
      else
        printf ("  no consistent point (never synchronised, resync under way, or writes in doubt)\n");
      print_link (s);
      print_stream (s);
      print_sync (s);
    }
  if (json_object_object_get_ex (st, "devices", &devs))
    for (i = 0; i < json_object_array_length (devs); i++) {
      json_object *d = json_object_array_get_idx (devs, i), *legs;
      printf ("device %s: %s, block size %" PRId64 ", %" PRId64 " unapplied extents\n",
              jstr (d, "name"), units_format_size ((uint64_t) jint (d, "size"), b1, sizeof b1),
              jint (d, "block_size"), jint (d, "unapplied_extents"));
      if (json_object_object_get_ex (d, "legs", &legs))
        for (j = 0; j < json_object_array_length (legs); j++) {
          json_object *l = json_object_array_get_idx (legs, j), *c;
          bool cons = json_object_object_get_ex (l, "consistent", &c) && json_object_get_boolean (c);
          printf ("  leg site %" PRId64 " %s: %s, consistent: %s", jint (l, "site"),
                  jstr (l, "path"), jstr (l, "state"), cons ? "yes" : "no");
          if (jint (l, "site") != 0)
            printf (", %" PRId64 " dirty regions of %s%s", jint (l, "dirty_regions"),
                    units_format_size ((uint64_t) jint (l, "region_size"), b1, sizeof b1),
                    !strcmp (jstr (l, "initial_sync"), "pending") ? ", initial sync pending" : "");
          if (jint (l, "in_doubt_regions"))
            printf (", %" PRId64 " regions in doubt", jint (l, "in_doubt_regions"));
          if (json_object_object_get_ex (l, "dirty_log", &c) && !strcmp (jstr (c, "health"), "failed"))
            printf (", DIRTY LOG FAILED (%s)", jstr (c, "path"));
          if (*jstr (l, "last_error"))
            printf (", last error: %s", jstr (l, "last_error"));
          printf ("\n");
        }
    }
}

/* Send a JSON command, return the reply document (or NULL with a message). */
static json_object *
command (const char *sock, json_object *cmd)
{
  char *reply = request (sock, json_object_to_json_string_ext (cmd, JSON_C_TO_STRING_PLAIN));
  json_object *doc;
  if (!reply)
    return NULL;
  doc = json_tokener_parse (reply);
  if (!doc)
    fprintf (stderr, "replctl: the instance sent a reply that is not JSON\n");
  free (reply);
  return doc;
}

/* The reply's error (printed), or 0. */
static int
reply_error (json_object *doc)
{
  json_object *err;
  if (!doc)
    return 1;
  if (json_object_object_get_ex (doc, "error", &err)) {
    fprintf (stderr, "replctl: %s\n", json_object_get_string (err));
    return 1;
  }
  return 0;
}

static json_object *
status_doc (const char *sock)
{
  json_object *cmd = json_object_new_object (), *doc;
  json_object_object_add (cmd, "cmd", json_object_new_string ("status"));
  doc = command (sock, cmd);
  json_object_put (cmd);
  if (doc && reply_error (doc)) {
    json_object_put (doc);
    return NULL;
  }
  return doc;
}

static json_object *
site_of (json_object *st, unsigned id)
{
  json_object *sites;
  size_t i;
  if (!json_object_object_get_ex (st, "sites", &sites))
    return NULL;
  for (i = 0; i < json_object_array_length (sites); i++) {
    json_object *s = json_object_array_get_idx (sites, i);
    if (jint (s, "id") == (int64_t) id)
      return s;
  }
  return NULL;
}

/* The "finished" counter of a site's resync or verify object. */
static int64_t
finished_count (const char *sock, unsigned site, const char *what)
{
  json_object *st = status_doc (sock), *s, *o;
  int64_t n = -1;
  if (st && (s = site_of (st, site)) && json_object_object_get_ex (s, what, &o))
    n = jint (o, "finished");
  if (st)
    json_object_put (st);
  return n;
}

/* Where a long-running operation stands, from its status object. */
struct progress {
  bool done;                     /* finished (one more than before) */
  int rc;                        /* exit status once done */
  int64_t count, total;          /* regions */
  char detail[160];              /* rate, ETA, ... */
  char final[300];               /* the last line */
};

static void
resync_progress (json_object *s, json_object *o, int64_t before, unsigned site, struct progress *p)
{
  json_object *v;
  bool active = json_object_object_get_ex (o, "active", &v) && json_object_get_boolean (v);
  double rate = json_object_object_get_ex (o, "bytes_per_second", &v) ? json_object_get_double (v) : 0;
  double eta = json_object_object_get_ex (o, "eta_seconds", &v) ? json_object_get_double (v) : -1;
  int64_t left = jint (o, "regions_left");
  char b1[32];

  p->count = active ? jint (o, "regions_copied") : 0;   /* else: an earlier resync's */
  p->total = p->count + left;
  units_format_size ((uint64_t) rate, b1, sizeof b1);
  {
    char e[32] = "";
    if (eta >= 0)
      snprintf (e, sizeof e, ", ETA %.0f s", eta);
    snprintf (p->detail, sizeof p->detail, "%s, %s/s%s%s", active ? "resync" : jstr (s, "mode"),
              b1, e, strcmp (jstr (s, "link"), "connected") && strcmp (jstr (s, "link"), "local") ?
              ", link not connected" : "");
  }
  if (jint (o, "finished") > before && !active && !strcmp (jstr (s, "mode"), "log")) {
    p->done = true;
    p->rc = 0;
    snprintf (p->final, sizeof p->final, "site %u: resync finished (%" PRId64 " regions copied)",
              site, jint (o, "regions_copied"));
  }
}

static void
verify_progress (json_object *s, json_object *o, int64_t before, unsigned site, struct progress *p)
{
  json_object *v;
  bool active = json_object_object_get_ex (o, "active", &v) && json_object_get_boolean (v);
  int64_t diff = jint (o, "regions_differing"), busy = jint (o, "regions_busy");

  (void) s;
  p->count = jint (o, "regions_checked");
  p->total = jint (o, "regions_total");
  snprintf (p->detail, sizeof p->detail, "verify, %" PRId64 " differing", diff);
  if (jint (o, "finished") > before && !active) {
    const char *err = jstr (o, "error");
    p->done = true;
    if (*err) {
      p->rc = 1;
      snprintf (p->final, sizeof p->final, "site %u: verify stopped: %s", site, err);
    }
    else {
      p->rc = diff ? 1 : 0;
      snprintf (p->final, sizeof p->final, "site %u: verify of device '%s': %" PRId64
                " regions checked, %" PRId64 " differ", site, jstr (o, "device"), p->count, diff);
      if (busy)
        snprintf (p->final + strlen (p->final), sizeof p->final - strlen (p->final),
                  ", %" PRId64 " not checked (written all the time)", busy);
      if (diff && json_object_object_get_ex (o, "mark", &v) && json_object_get_boolean (v))
        snprintf (p->final + strlen (p->final), sizeof p->final - strlen (p->final),
                  "; they are marked and being copied");
    }
  }
}

/* Follow an operation until its "finished" counter passes before: a bar
 * on a terminal, a line every 2 s otherwise. */
static int
wait_op (const char *sock, unsigned site, const char *what, int64_t before,
         void (*fn) (json_object *, json_object *, int64_t, unsigned, struct progress *))
{
  bool tty = isatty (STDOUT_FILENO);
  int64_t last_line = -1;
  int ticks;

  for (ticks = 0;; ticks++) {
    json_object *st = status_doc (sock), *s, *o;
    struct progress p = { .done = false };
    double pct;

    if (!st || !(s = site_of (st, site)) || !json_object_object_get_ex (s, what, &o)) {
      if (st)
        json_object_put (st);
      if (tty)
        printf ("\n");
      fprintf (stderr, "replctl: lost the instance while waiting for the %s\n", what);
      return 1;
    }
    fn (s, o, before, site, &p);
    json_object_put (st);
    if (p.done) {
      if (tty)
        printf ("\r\033[K");
      if (p.rc && !tty)
        fprintf (stderr, "replctl: %s\n", p.final);
      else
        printf ("%s\n", p.final);
      return p.rc;
    }
    pct = p.total > 0 ? 100.0 * (double) p.count / (double) p.total : 0;
    if (tty) {
      char bar[31];
      int k, fill = (int) (pct * 30 / 100);
      for (k = 0; k < 30; k++)
        bar[k] = k < fill ? '#' : '.';
      bar[30] = 0;
      printf ("\r\033[Ksite %u: [%s] %5.1f%% %" PRId64 "/%" PRId64 " regions, %s", site, bar,
              pct, p.count, p.total, p.detail);
      fflush (stdout);
    }
    else if (ticks % 10 == 0 && p.count != last_line) {
      printf ("site %u: %.1f%% (%" PRId64 " of %" PRId64 " regions), %s\n", site, pct, p.count,
              p.total, p.detail);
      fflush (stdout);
      last_line = p.count;
    }
    usleep (200000);
  }
}

static int
parse_site (const char *cmd, const char *arg, unsigned *site)
{
  char *end;
  unsigned long v;
  errno = 0;
  v = strtoul (arg, &end, 10);
  if (errno || *end || end == arg || v > 15 || arg[0] == '-') {
    fprintf (stderr, "replctl: %s: '%s' is not a site number (0..15)\n", cmd, arg);
    return -1;
  }
  *site = (unsigned) v;
  return 0;
}

/* Run one administrative command: 0, 1 (refused/failed), 2 (usage). */
static int
admin (const char *sock, int argc, char **argv)
{
  const char *cmd = argv[0];
  json_object *req = json_object_new_object (), *doc, *msg;
  const char *pos[3] = { NULL, NULL, NULL };
  const char *fall_behind = NULL, *from = NULL;
  bool full = false, wait = false, mark = false;
  unsigned site = 0, npos = 0, want, wait_site;
  int64_t before = -1;
  int i, rc;

  for (i = 1; i < argc; i++) {
    if (!strcmp (argv[i], "--full") && !strcmp (cmd, "resync"))
      full = true;
    else if (!strcmp (argv[i], "--wait") && (!strcmp (cmd, "resync") || !strcmp (cmd, "verify") ||
                                             !strcmp (cmd, "restore")))
      wait = true;
    else if (!strcmp (argv[i], "--mark") && !strcmp (cmd, "verify"))
      mark = true;
    else if (!strcmp (argv[i], "--fall-behind") && !strcmp (cmd, "policy") && i + 1 < argc)
      fall_behind = argv[++i];
    else if (!strcmp (argv[i], "--from") && !strcmp (cmd, "restore") && i + 1 < argc)
      from = argv[++i];
    else if (argv[i][0] == '-' && argv[i][1]) {
      fprintf (stderr, "replctl: %s: unknown option '%s'\n", cmd, argv[i]);
      json_object_put (req);
      return 2;
    }
    else if (npos < 3)
      pos[npos++] = argv[i];
    else {
      fprintf (stderr, "replctl: %s: too many arguments\n", cmd);
      json_object_put (req);
      return 2;
    }
  }
  want = !strcmp (cmd, "resync") || !strcmp (cmd, "verify") || !strcmp (cmd, "policy") ? 2 : 1;
  if (npos != want || (!strcmp (cmd, "restore") && !from)) {
    fprintf (stderr, "replctl: usage: %s\n",
             !strcmp (cmd, "resync") ? "resync DEVICE SITE [--full] [--wait]" :
             !strcmp (cmd, "verify") ? "verify DEVICE SITE [--mark] [--wait]" :
             !strcmp (cmd, "policy") ? "policy SITE sync|async [--fall-behind SPEC]" :
             !strcmp (cmd, "restore") ? "restore DEVICE --from SITE [--wait]" :
             !strcmp (cmd, "discard") ? "discard SITE" : "pause|resume SITE");
    json_object_put (req);
    return 2;
  }
  json_object_object_add (req, "cmd", json_object_new_string (cmd));
  if (!strcmp (cmd, "resync") || !strcmp (cmd, "verify") || !strcmp (cmd, "restore")) {
    json_object_object_add (req, "device", json_object_new_string (pos[0]));
    if (parse_site (cmd, from ? from : pos[1], &site) == -1) {
      json_object_put (req);
      return 2;
    }
  }
  else if (parse_site (cmd, pos[0], &site) == -1) {
    json_object_put (req);
    return 2;
  }
  json_object_object_add (req, "site", json_object_new_int ((int) site));
  wait_site = site;
  if (full)
    json_object_object_add (req, "full", json_object_new_boolean (1));
  if (mark)
    json_object_object_add (req, "mark", json_object_new_boolean (1));
  if (!strcmp (cmd, "policy")) {
    if (strcmp (pos[1], "sync") && strcmp (pos[1], "async")) {
      fprintf (stderr, "replctl: policy: '%s': expected sync or async\n", pos[1]);
      json_object_put (req);
      return 2;
    }
    json_object_object_add (req, "policy", json_object_new_string (pos[1]));
    if (fall_behind)
      json_object_object_add (req, "fall_behind", json_object_new_string (fall_behind));
  }
  if (!strcmp (cmd, "restore"))
    wait_site = 0;                       /* a restore is site 0's resync */
  if (wait && (before = finished_count (sock, wait_site, !strcmp (cmd, "verify") ? "verify" : "resync")) < 0) {
    json_object_put (req);
    return 1;
  }
  doc = command (sock, req);
  json_object_put (req);
  if ((rc = reply_error (doc)) != 0) {
    if (doc)
      json_object_put (doc);
    return rc;
  }
  if (json_object_object_get_ex (doc, "message", &msg))
    printf ("%s\n", json_object_get_string (msg));
  json_object_put (doc);
  if (!wait)
    return 0;
  if (!strcmp (cmd, "verify"))
    return wait_op (sock, site, "verify", before, verify_progress);
  return wait_op (sock, wait_site, "resync", before, resync_progress);
}

/* replctl metrics: print the instance's OpenMetrics text. */
static int
metrics (const char *sock)
{
  json_object *cmd = json_object_new_object (), *doc, *m;
  int rc = 1;

  json_object_object_add (cmd, "cmd", json_object_new_string ("metrics"));
  doc = command (sock, cmd);
  json_object_put (cmd);
  if (doc && !reply_error (doc)) {
    if (json_object_object_get_ex (doc, "metrics", &m)) {
      fputs (json_object_get_string (m), stdout);
      rc = 0;
    }
    else
      fprintf (stderr, "replctl: the instance does not serve metrics (an older version?)\n");
  }
  if (doc)
    json_object_put (doc);
  return rc;
}

/* replctl switchover [--timeout SECONDS]: the summary and the next step. */
static int
switchover (const char *sock, int nargs, char **args)
{
  json_object *cmd, *doc, *sites;
  long timeout = 60;
  char *end;
  char others[64] = "";
  int64_t next = 0;
  size_t i;
  int rc;

  for (i = 0; i < (size_t) nargs; i++) {
    if (!strcmp (args[i], "--timeout") && i + 1 < (size_t) nargs) {
      errno = 0;
      timeout = strtol (args[++i], &end, 10);
      if (errno || *end || timeout < 1 || timeout > 86400) {
        fprintf (stderr, "replctl: switchover: --timeout '%s': expected 1..86400 seconds\n", args[i]);
        return 2;
      }
    }
    else {
      fprintf (stderr, "replctl: usage: switchover [--timeout SECONDS]\n");
      return 2;
    }
  }
  cmd = json_object_new_object ();
  json_object_object_add (cmd, "cmd", json_object_new_string ("switchover"));
  json_object_object_add (cmd, "timeout", json_object_new_int64 (timeout));
  doc = command (sock, cmd);
  json_object_put (cmd);
  if ((rc = reply_error (doc)) != 0) {
    if (doc)
      json_object_put (doc);
    return rc;
  }
  printf ("switchover done: every site holds every write up to seq %" PRId64 "; this instance is "
          "read-only now (writes fail with EROFS)\n", jint (doc, "seq"));
  if (json_object_object_get_ex (doc, "sites", &sites))
    for (i = 0; i < json_object_array_length (sites); i++) {
      json_object *e = json_object_array_get_idx (sites, i);
      int64_t id = jint (e, "id");
      printf ("  site %" PRId64 "%s: holds seq %" PRId64 ", consistent; %" PRId64
              " leg(s) labelled handed over\n", id, id ? "" : " (local legs)",
              jint (e, "applied_seq"), jint (e, "legs_labelled"));
      if (id && !next)
        next = id;
      else if (id && strlen (others) < sizeof others - 8)
        snprintf (others + strlen (others), sizeof others - strlen (others), ", %" PRId64, id);
    }
  if (next)
    printf ("next: start the new primary at site %" PRId64 "%s%s%s on a new log with its leg as "
            "local leg and this instance's legs as its remote; then stop this instance\n", next,
            *others ? " (or one of sites " : "", *others ? others + 2 : "", *others ? ")" : "");
  else
    printf ("next: this instance has no remote site: stop it\n");
  json_object_put (doc);
  return 0;
}

static char *sock_path;          /* freed at exit: usage errors return early */

/* replctl status [--json]: ARGS are the words after "status"; SOCK NULL:
 * the default control socket, once the options are known to be good. */
static int
status (char *sock, int nargs, char **args)
{
  bool json = false;
  json_object *doc, *err;
  char *reply;
  int i;

  for (i = 0; i < nargs; i++) {
    if (!strcmp (args[i], "--json"))
      json = true;
    else {
      fprintf (stderr, "replctl: status: unknown option '%s'\n", args[i]);
      return 2;
    }
  }
  if (!sock && !(sock = cfg_default_control_socket ()))
    return 1;
  sock_path = sock;
  reply = request (sock, "status");
  if (!reply)
    return 1;
  doc = json_tokener_parse (reply);
  if (!doc) {
    fprintf (stderr, "replctl: the instance sent a reply that is not JSON\n");
    free (reply);
    return 1;
  }
  if (json_object_object_get_ex (doc, "error", &err)) {
    fprintf (stderr, "replctl: %s\n", json_object_get_string (err));
    json_object_put (doc);
    free (reply);
    return 1;
  }
  if (json)
    printf ("%s\n", json_object_to_json_string_ext (doc, JSON_C_TO_STRING_PRETTY));
  else
    print_status (doc);
  json_object_put (doc);
  free (reply);
  return 0;
}


static void
free_sock_path (void)
{
  free (sock_path);
}

int
main (int argc, char **argv)
{
  static const struct option opts[] = {
    { "socket", required_argument, NULL, 's' },
    { "instance", required_argument, NULL, 'i' },
    { "help", no_argument, NULL, 'h' },
    { NULL, 0, NULL, 0 }
  };
  static const char *const admin_cmds[] = {
    "resync", "verify", "restore", "pause", "resume", "policy", "discard", NULL
  };
  char *sock = NULL;
  int c, i;

  atexit (free_sock_path);
  while ((c = getopt_long (argc, argv, "+s:i:h", opts, NULL)) != -1) {
    switch (c) {
    case 's':
      free (sock);
      sock_path = sock = strdup (optarg);
      break;
    case 'i':
      free (sock);
      sock_path = sock = NULL;
      if (asprintf (&sock, "/run/nbd-replicator/%s.sock", optarg) == -1)
        return 1;
      sock_path = sock;
      break;
    case 'h':
      usage (stdout);
      return 0;
    default:
      usage (stderr);
      return 2;
    }
  }
  if (optind >= argc) {
    fprintf (stderr, "replctl: missing command\n");
    usage (stderr);
    return 2;
  }
  for (i = 0; admin_cmds[i]; i++)
    if (!strcmp (argv[optind], admin_cmds[i])) {
      int rc;
      if (!sock && !(sock = cfg_default_control_socket ()))
        return 1;
      sock_path = sock;
      rc = admin (sock, argc - optind, argv + optind);
      return rc;
    }
  if (!strcmp (argv[optind], "switchover")) {
    if (!sock && !(sock = cfg_default_control_socket ()))
      return 1;
    sock_path = sock;
    return switchover (sock, argc - optind - 1, argv + optind + 1);
  }
  if (!strcmp (argv[optind], "journal-replay"))
    return replctl_journal_replay (argc - optind - 1, argv + optind + 1);
  if (!strcmp (argv[optind], "metrics")) {
    if (optind + 1 < argc) {
      fprintf (stderr, "replctl: metrics: unknown option '%s'\n", argv[optind + 1]);
      return 2;
    }
    if (!sock && !(sock = cfg_default_control_socket ()))
      return 1;
    sock_path = sock;
    return metrics (sock);
  }
  if (strcmp (argv[optind], "status") != 0) {
    fprintf (stderr, "replctl: unknown command '%s'\n", argv[optind]);
    usage (stderr);
    return 2;
  }
  return status (sock, argc - optind - 1, argv + optind + 1);
}
