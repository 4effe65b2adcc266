/* fuzz-control.c: libFuzzer harness for the control protocol (src/control.c):
 * the flat JSON command parser (flat_json_parse), the command line
 * framing (serve_one over a socket pair) and the dispatch of commands
 * (control_handle) into a replicator instance.
 *
 * control.c is #included to reach its static functions.  The instance is a
 * real one, built once by replicator_new from a configuration of file legs
 * in a scratch directory (device "db": local leg, a file leg at site 1
 * with a disk dirty log, an NBD leg at site 2 whose socket does not exist;
 * device "web": local leg and a file leg at site 1) and never started: no
 * worker threads, no I/O but what a command itself does.  The state a
 * command depends on (a site running, dirty or resyncing, paused; a local
 * leg out of service and who serves it) is set per input from its first
 * byte and put back after it, so inputs are independent.
 *
 * Input: u8 scenario (S_* below), then the command line.
 *
 * Invariants checked (ids in brackets):
 *   [control-parser]  flat_json_parse accepts exactly the flat JSON objects
 *                     of a reference grammar written here (RFC 8259 objects
 *                     whose values are strings without \u escapes,
 *                     integers that fit int64, true, false, null; keys up to
 *                     63 bytes, strings up to 1023; leading zeros tolerated,
 *                     as strtoll reads them), and yields the same members
 *                     (the last of duplicated keys wins);
 *   [control-reply]   every reply is one JSON object: the status document
 *                     (version, engine, log, 3 sites, 2 devices) for status,
 *                     {"ok": true, "metrics": "<OpenMetrics text, # EOF>"}
 *                     for metrics, else {"ok": true, "message": "..."} or
 *                     {"error": "<non-empty>"};
 *   [control-dispatch] the reply is the one the protocol calls for: bad
 *                     request / unknown command / bad site / missing device
 *                     errors, errors for sites and devices the instance does
 *                     not have (guarantee 8), and "ok" exactly when the
 *                     command applies (pause / resume / policy / resync /
 *                     restore), with the site's state changed accordingly;
 *                     a switchover is refused (site 0 does not run) with
 *                     the instance left writable;
 *                     verify of a site that is not a consistent prefix is
 *                     refused;
 *   [control-framing] a line sent over the socket gets the reply
 *                     control_handle gives for it, then a newline; a line
 *                     longer than 4096 bytes gets a bad-request error.
 */
#include "../../src/control.c"

#include <inttypes.h>
#include <stdint.h>

#include "fuzz-common.h"

enum {
  S_RUNNING = 1,        /* site 1's worker "runs" (s->running; no thread) */
  S_RESYNCING = 2,      /* site 1 in log mode, resyncing (not dirty) */
  S_LOCAL_OUT = 4,      /* device db's local leg out of service */
  S_SERVE1 = 8,         /* ... served by site 1 (else site 2) */
  S_LOCAL_RESYNC = 16,  /* db's local leg already being restored */
  S_PAUSED2 = 32,       /* site 2 paused */
  S_CLEAN1 = 64,        /* site 1's dirty bitmaps empty */
  S_SOCKET = 128,       /* through serve_one on a socket pair */
};

static struct replicator *R;

struct saved_site {
  bool running, dirty_log_mode, resyncing, paused, resync_now;
  enum cfg_policy policy;
  enum cfg_fall_behind fb;
  uint64_t fbv;
  uint32_t full, restore_req;
};
static struct saved_site saved[CFG_MAX_SITES];

/* ---- reference grammar: flat JSON objects ----------------------------------------------- */

enum mtype { M_STRING, M_INT, M_BOOL, M_NULL };

struct member {
  char key[64];
  enum mtype type;
  char str[1024];
  int64_t num;
  bool b;
};

#define MAX_MEMBERS 64

struct flat {
  struct member m[MAX_MEMBERS];     /* distinct keys, the last value of each */
  unsigned n;
};

static const char *
ref_ws (const char *p)
{
  while (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r')
    p++;
  return p;
}

/* A JSON string without \u; NULL if invalid or longer than max - 1 bytes. */
static const char *
ref_string (const char *p, char *out, size_t max)
{
  size_t n = 0;
  if (*p++ != '"')
    return NULL;
  for (;;) {
    unsigned char c = (unsigned char) *p++;
    if (c == '"')
      break;
    if (c == 0 || c < 0x20)
      return NULL;
    if (c == '\\') {
      switch (*p++) {
      case '"': c = '"'; break;
      case '\\': c = '\\'; break;
      case '/': c = '/'; break;
      case 'b': c = '\b'; break;
      case 'f': c = '\f'; break;
      case 'n': c = '\n'; break;
      case 'r': c = '\r'; break;
      case 't': c = '\t'; break;
      default: return NULL;
      }
    }
    if (n + 1 >= max)
      return NULL;
    out[n++] = (char) c;
  }
  out[n] = 0;
  return p;
}

static const char *
ref_int (const char *p, int64_t *v)
{
  bool neg = *p == '-';
  uint64_t acc = 0, lim;
  if (neg)
    p++;
  if (*p < '0' || *p > '9')
    return NULL;
  lim = neg ? (uint64_t) INT64_MAX + 1 : (uint64_t) INT64_MAX;
  while (*p >= '0' && *p <= '9') {
    unsigned d = (unsigned) (*p++ - '0');
    if (acc > (lim - d) / 10)
      return NULL;                        /* does not fit int64 */
    acc = acc * 10 + d;
  }
  if (*p == '.' || *p == 'e' || *p == 'E')
    return NULL;                          /* not an integer */
  *v = neg ? (acc == (uint64_t) INT64_MAX + 1 ? INT64_MIN : -(int64_t) acc) : (int64_t) acc;
  return p;
}

static bool
ref_parse (const char *line, struct flat *f)
{
  const char *p = ref_ws (line);
  f->n = 0;
  if (*p++ != '{')
    return false;
  p = ref_ws (p);
  if (*p != '}') {
    for (;;) {
      struct member m;
      unsigned i;
      memset (&m, 0, sizeof m);
      if (!(p = ref_string (p, m.key, sizeof m.key)))
        return false;
      p = ref_ws (p);
      if (*p++ != ':')
        return false;
      p = ref_ws (p);
      if (*p == '"') {
        m.type = M_STRING;
        if (!(p = ref_string (p, m.str, sizeof m.str)))
          return false;
      }
      else if (!strncmp (p, "true", 4) || !strncmp (p, "false", 5)) {
        m.type = M_BOOL;
        m.b = *p == 't';
        p += m.b ? 4 : 5;
      }
      else if (!strncmp (p, "null", 4)) {
        m.type = M_NULL;
        p += 4;
      }
      else {
        m.type = M_INT;
        if (!(p = ref_int (p, &m.num)))
          return false;
      }
      for (i = 0; i < f->n && strcmp (f->m[i].key, m.key); i++)
        ;
      if (i == f->n) {
        if (f->n == MAX_MEMBERS)
          return false;                   /* (the harness's limit, see below) */
        f->n++;
      }
      f->m[i] = m;
      p = ref_ws (p);
      if (*p == ',') {
        p = ref_ws (p + 1);
        continue;
      }
      if (*p != '}')
        return false;
      break;
    }
  }
  return *ref_ws (p + 1) == 0;
}

static const struct member *
member (const struct flat *f, const char *key)
{
  unsigned i;
  for (i = 0; i < f->n; i++)
    if (!strcmp (f->m[i].key, key))
      return &f->m[i];
  return NULL;
}

static void
check_parser (const char *line, struct flat *f, bool *flat_ok)
{
  json_object *o = flat_json_parse (line);
  bool ok = ref_parse (line, f);
  unsigned i;

  if (!ok && f->n == MAX_MEMBERS) {       /* beyond the harness's table: no verdict */
    if (o)
      json_object_put (o);
    *flat_ok = o != NULL;
    return;
  }
  FZ_CHECK ("control-parser", ok == (o != NULL), "flat_json_parse %s a line the reference grammar %s: %.200s",
            o ? "accepts" : "refuses", ok ? "accepts" : "refuses", line);
  *flat_ok = ok;
  if (!o)
    return;
  FZ_CHECK ("control-parser", json_object_is_type (o, json_type_object) &&
            (unsigned) json_object_object_length (o) == f->n,
            "parsed %d members, the reference %u", json_object_object_length (o), f->n);
  for (i = 0; i < f->n; i++) {
    const struct member *m = &f->m[i];
    json_object *v = NULL;
    FZ_CHECK ("control-parser", json_object_object_get_ex (o, m->key, &v), "member '%s' missing", m->key);
    switch (m->type) {
    case M_NULL:
      FZ_CHECK ("control-parser", v == NULL, "member '%s' should be null", m->key);
      break;
    case M_BOOL:
      FZ_CHECK ("control-parser", json_object_is_type (v, json_type_boolean) &&
                json_object_get_boolean (v) == m->b, "member '%s' should be %s", m->key,
                m->b ? "true" : "false");
      break;
    case M_INT:
      FZ_CHECK ("control-parser", json_object_is_type (v, json_type_int) &&
                json_object_get_int64 (v) == m->num, "member '%s' should be %" PRId64, m->key, m->num);
      break;
    case M_STRING:
      FZ_CHECK ("control-parser", json_object_is_type (v, json_type_string) &&
                !strcmp (json_object_get_string (v), m->str), "member '%s' should be the string '%s'",
                m->key, m->str);
      break;
    }
  }
  json_object_put (o);
}

/* ---- replies ------------------------------------------------------------------------------- */

enum kind { K_STATUS, K_OK, K_ERROR, K_METRICS };

/* OpenMetrics text as replicator_metrics writes it: lines that are
 * comments or nbd_replicator_ samples, the last one "# EOF". */
static bool
metrics_ok (const char *t)
{
  size_t n = strlen (t);
  const char *p;
  if (n < 6 || strcmp (t + n - 6, "# EOF\n"))
    return false;
  for (p = t; *p; p = strchr (p, '\n') + 1) {
    if (strncmp (p, "# ", 2) && strncmp (p, "nbd_replicator_", 15))
      return false;
    if (!strchr (p, '\n'))
      return false;
  }
  return true;
}

/* Parse and classify a reply; *msg gets the message or error text
 * (static buffer). */
static enum kind
classify (const char *reply, const char **msg)
{
  static char text[1024];
  json_object *o, *v;
  enum kind k;

  text[0] = 0;
  *msg = text;
  FZ_CHECK ("control-reply", reply != NULL, "no reply");
  o = reply ? json_tokener_parse (reply) : NULL;
  FZ_CHECK ("control-reply", o && json_object_is_type (o, json_type_object),
            "the reply is not a JSON object: %.300s", reply ? reply : "(null)");
  if (!o)
    return K_ERROR;
  if (json_object_object_get_ex (o, "error", &v)) {
    FZ_CHECK ("control-reply", json_object_object_length (o) == 1 &&
              json_object_is_type (v, json_type_string) && json_object_get_string_len (v) > 0,
              "malformed error reply: %.300s", reply);
    snprintf (text, sizeof text, "%s", json_object_get_string (v));
    k = K_ERROR;
  }
  else if (json_object_object_get_ex (o, "ok", &v) && json_object_object_get_ex (o, "metrics", NULL)) {
    json_object *m = NULL;
    FZ_CHECK ("control-reply", json_object_object_length (o) == 2 &&
              json_object_is_type (v, json_type_boolean) && json_object_get_boolean (v) &&
              json_object_object_get_ex (o, "metrics", &m) && json_object_is_type (m, json_type_string) &&
              metrics_ok (json_object_get_string (m)),
              "malformed metrics reply: %.300s", reply);
    k = K_METRICS;
  }
  else if (json_object_object_get_ex (o, "ok", &v)) {
    json_object *m = NULL;
    FZ_CHECK ("control-reply", json_object_object_length (o) == 2 &&
              json_object_is_type (v, json_type_boolean) && json_object_get_boolean (v) &&
              json_object_object_get_ex (o, "message", &m) && json_object_is_type (m, json_type_string),
              "malformed ok reply: %.300s", reply);
    snprintf (text, sizeof text, "%s", m ? json_object_get_string (m) : "");
    k = K_OK;
  }
  else {
    json_object *sites, *devs, *log;
    FZ_CHECK ("control-reply", json_object_object_get_ex (o, "version", &v) &&
              json_object_object_get_ex (o, "engine", &v) &&
              json_object_object_get_ex (o, "log", &log) && json_object_is_type (log, json_type_object) &&
              json_object_object_get_ex (o, "sites", &sites) &&
              json_object_is_type (sites, json_type_array) && json_object_array_length (sites) == 3 &&
              json_object_object_get_ex (o, "devices", &devs) &&
              json_object_is_type (devs, json_type_array) && json_object_array_length (devs) == 2,
              "neither ok, error nor a status document: %.300s", reply);
    k = K_STATUS;
  }
  json_object_put (o);
  *msg = text;
  return k;
}

static const char *
kind_name (enum kind k)
{
  return k == K_STATUS ? "status" : k == K_OK ? "ok" : k == K_METRICS ? "metrics" : "error";
}

/* ---- the dispatch oracle ------------------------------------------------------------------ */

/* json-c's boolean reading of a member (json_object_get_boolean). */
static bool
truthy (const struct member *m)
{
  if (!m)
    return false;
  switch (m->type) {
  case M_BOOL: return m->b;
  case M_INT: return m->num != 0;
  case M_STRING: return m->str[0] != 0;
  default: return false;
  }
}

static bool
site_has_leg (const struct vdev *d, unsigned site)
{
  size_t j;
  for (j = 0; j < d->nlegs; j++)
    if (d->legs[j].site == site)
      return true;
  return false;
}

static uint64_t
dirty_regions (unsigned site)
{
  uint64_t n = 0;
  size_t i, j;
  for (i = 0; i < R->ndevs; i++)
    for (j = 0; j < R->devs[i].nlegs; j++)
      if (R->devs[i].legs[j].site == site && R->devs[i].legs[j].dirty_log)
        n += bitmap_count (R->devs[i].legs[j].dirty_log);
  return n;
}

/* The reply the protocol calls for: kind, and a prefix of its text. */
static enum kind
expected (const struct flat *f, char *prefix, size_t len)
{
  const struct member *cm = member (f, "cmd"), *sm = member (f, "site"), *dm = member (f, "device");
  const char *cmd, *dev;
  struct vdev *d = NULL;
  struct site *s;
  unsigned site;

  prefix[0] = 0;
  if (!cm || cm->type != M_STRING) {
    snprintf (prefix, len, "bad request: no \"cmd\"");
    return K_ERROR;
  }
  cmd = cm->str;
  if (!strcmp (cmd, "status"))
    return K_STATUS;
  if (!strcmp (cmd, "metrics"))
    return K_METRICS;
  if (!strcmp (cmd, "switchover")) {
    const struct member *tm = member (f, "timeout");
    /* The fixture never starts: site 0's worker does not run, so a
     * switchover is refused before anything changes. */
    if (tm && (tm->type != M_INT || tm->num < 1 || tm->num > 86400))
      snprintf (prefix, len, "bad request: \"timeout\" must be 1..86400 seconds");
    else
      snprintf (prefix, len, "switchover: site 0 cannot be drained");
    return K_ERROR;
  }
  if (strcmp (cmd, "resync") && strcmp (cmd, "pause") && strcmp (cmd, "resume") &&
      strcmp (cmd, "policy") && strcmp (cmd, "verify") && strcmp (cmd, "restore") &&
      strcmp (cmd, "discard")) {
    snprintf (prefix, len, "unknown command '");
    return K_ERROR;
  }
  if (!sm || sm->type != M_INT || sm->num < 0 || sm->num >= CFG_MAX_SITES) {
    snprintf (prefix, len, "bad request: \"site\" must be a site number");
    return K_ERROR;
  }
  site = (unsigned) sm->num;
  dev = dm && dm->type == M_STRING ? dm->str : NULL;
  if (!dev && (!strcmp (cmd, "resync") || !strcmp (cmd, "restore") || !strcmp (cmd, "verify"))) {
    snprintf (prefix, len, "bad request: %s needs a \"device\"", cmd);
    return K_ERROR;
  }
  if (dev) {
    d = !*dev ? &R->devs[0] : !strcmp (dev, "db") ? &R->devs[0] : !strcmp (dev, "web") ? &R->devs[1] : NULL;
  }
  s = &R->sites[site];
  if (!strcmp (cmd, "restore")) {
    if (!d)
      return K_ERROR;
    if (!d->local_out || !d->read_site || site != d->read_site || d->local->state == LEG_RESYNCING ||
        d->local->reopen_fd >= 0)
      return K_ERROR;
    return K_OK;                          /* the local leg's file opens */
  }
  /* Every other command names a remote site of the instance. */
  if (site == 0 || !s->cfg)
    return K_ERROR;
  if (!strcmp (cmd, "discard"))
    return K_ERROR;                       /* no leg of the fixture is in split brain */
  if (!strcmp (cmd, "pause"))
    return s->paused ? K_ERROR : K_OK;
  if (!strcmp (cmd, "resume"))
    return s->paused ? K_OK : K_ERROR;
  if (!strcmp (cmd, "policy")) {
    const struct member *pm = member (f, "policy"), *fm = member (f, "fall_behind");
    enum cfg_fall_behind k;
    uint64_t v;
    const char *why;
    if (!pm || pm->type != M_STRING) {
      snprintf (prefix, len, "bad request: policy needs a \"policy\"");
      return K_ERROR;
    }
    if (strcmp (pm->str, "sync") && strcmp (pm->str, "async"))
      return K_ERROR;
    if (fm && fm->type == M_STRING && cfg_parse_fall_behind (fm->str, &k, &v, &why) == -1)
      return K_ERROR;
    return K_OK;
  }
  if (!d || !site_has_leg (d, site))
    return K_ERROR;
  if (!strcmp (cmd, "verify"))
    return K_ERROR;                       /* every remote site is dirty or resyncing here */
  /* resync */
  if (!s->running)
    return K_ERROR;
  if (truthy (member (f, "full")))
    return K_OK;
  return site_state_is_dirty_log (site_state (s)) || site_state_is_resync (site_state (s)) ||
    dirty_regions (site) ? K_OK : K_ERROR;
}

/* After an ok reply, the state the command asked for. */
static void
check_effect (const struct flat *f)
{
  const struct member *cm = member (f, "cmd"), *sm = member (f, "site"), *dm = member (f, "device");
  struct site *s = &R->sites[sm->num];

  if (!strcmp (cm->str, "pause") || !strcmp (cm->str, "resume"))
    FZ_CHECK ("control-dispatch", s->paused == !strcmp (cm->str, "pause"),
              "site %u: %s answered ok but paused is %d", s->id, cm->str, s->paused);
  else if (!strcmp (cm->str, "policy")) {
    const struct member *pm = member (f, "policy");
    FZ_CHECK ("control-dispatch", s->policy == (!strcmp (pm->str, "sync") ? POLICY_SYNC : POLICY_ASYNC),
              "site %u: policy %s answered ok but not applied", s->id, pm->str);
  }
  else if (!strcmp (cm->str, "resync"))
    FZ_CHECK ("control-dispatch", s->resync_now, "site %u: resync answered ok but not requested", s->id);
  else if (!strcmp (cm->str, "restore")) {
    struct vdev *d = dm->str[0] && strcmp (dm->str, "db") ? &R->devs[1] : &R->devs[0];
    FZ_CHECK ("control-dispatch", d->local->reopen_fd >= 0 &&
              (R->sites[0].restore_req & (1u << d->index)),
              "restore of '%s' answered ok but not requested", d->name);
  }
}

/* ---- scenario set-up and reset ------------------------------------------------------------ */

static void
scenario (uint8_t sc)
{
  struct site *s1 = &R->sites[1], *s2 = &R->sites[2];
  struct vdev *db = &R->devs[0];
  size_t j;

  s1->running = sc & S_RUNNING;
  if (sc & S_RESYNCING) {
    s1->dirty_log_mode = false;          /* the fixture: no worker runs */
    s1->resyncing = true;
  }
  if (sc & S_LOCAL_OUT) {
    db->local_out = true;
    db->read_site = (sc & S_SERVE1) ? 1 : 2;
  }
  if (sc & S_LOCAL_RESYNC)
    db->local->state = LEG_RESYNCING;
  s2->paused = sc & S_PAUSED2;
  if (sc & S_CLEAN1)
    for (j = 0; j < R->ndevs; j++) {
      size_t k;
      for (k = 0; k < R->devs[j].nlegs; k++)
        if (R->devs[j].legs[k].site == 1)
          bitmap_clear_bits (R->devs[j].legs[k].dirty_log, 0, R->devs[j].legs[k].dirty_log->nbits);
    }
}

static void
save_state (void)
{
  unsigned i;
  for (i = 0; i < CFG_MAX_SITES; i++) {
    struct site *s = &R->sites[i];
    struct saved_site *v = &saved[i];
    v->running = s->running;
    v->dirty_log_mode = s->dirty_log_mode;
    v->resyncing = s->resyncing;
    v->paused = s->paused;
    v->resync_now = s->resync_now;
    v->policy = s->policy;
    v->fb = s->fall_behind;
    v->fbv = s->fall_behind_value;
    v->full = s->resync_full_devs;
    v->restore_req = s->restore_req;
  }
}

static void
restore_state (void)
{
  unsigned i;
  size_t j, k;
  FZ_CHECK ("control-dispatch", R->handover.state == HO_NONE,
            "a refused switchover left the instance read-only");
  for (i = 0; i < CFG_MAX_SITES; i++) {
    struct site *s = &R->sites[i];
    struct saved_site *v = &saved[i];
    FZ_CHECK ("control-dispatch", !s->verify.thread_started && !s->verify.active,
              "a verify was started on site %u", i);
    s->running = v->running;
    s->dirty_log_mode = v->dirty_log_mode;
    s->resyncing = v->resyncing;
    s->paused = v->paused;
    s->resync_now = v->resync_now;
    s->policy = v->policy;
    s->fall_behind = v->fb;
    s->fall_behind_value = v->fbv;
    s->resync_full_devs = v->full;
    s->restore_req = v->restore_req;
  }
  for (j = 0; j < R->ndevs; j++) {
    struct vdev *d = &R->devs[j];
    d->local_out = false;
    d->read_site = 0;
    d->local->state = LEG_REPLICATING;
    if (d->local->reopen_fd >= 0) {
      close (d->local->reopen_fd);
      d->local->reopen_fd = -1;
    }
    for (k = 0; k < d->nlegs; k++)
      if (d->legs[k].site != 0 && d->legs[k].dirty_log)
        bitmap_set_all (d->legs[k].dirty_log);     /* new sites: every region to copy */
  }
}

/* ---- the socket path ------------------------------------------------------------------------ */

static char *
through_socket (const char *line, size_t len)
{
  int sv[2];
  struct control c;
  char *buf = NULL;
  size_t got = 0, cap = 0;
  size_t done = 0;

  if (socketpair (AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) == -1) {
    perror ("socketpair");
    abort ();
  }
  while (done < len) {
    ssize_t w = write (sv[0], line + done, len - done);
    if (w <= 0) {
      perror ("write");
      abort ();
    }
    done += (size_t) w;
  }
  shutdown (sv[0], SHUT_WR);
  memset (&c, 0, sizeof c);
  c.r = R;
  c.lfd = -1;
  serve_one (&c, sv[1]);
  close (sv[1]);
  for (;;) {
    ssize_t r;
    if (got + 4096 + 1 > cap) {
      cap = (cap + 4096) * 2;
      if (!(buf = realloc (buf, cap)))
        abort ();
    }
    r = read (sv[0], buf + got, cap - got - 1);
    if (r <= 0)
      break;
    got += (size_t) r;
  }
  close (sv[0]);
  if (!buf && !(buf = malloc (1)))
    abort ();
  buf[got] = 0;
  return buf;
}

/* ---- entry points ------------------------------------------------------------------------------ */

static void
make_file (const char *path, size_t size)
{
  int fd = open (path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd == -1 || ftruncate (fd, (off_t) size) == -1) {
    perror (path);
    exit (1);
  }
  close (fd);
}

int
LLVMFuzzerInitialize (int *argc, char ***argv)
{
  const char *d = fz_workdir ();
  char p[6][700], *text;
  struct cfg *cfg;
  int i;

  (void) argc;
  (void) argv;
  fz_reports_install ();
  for (i = 0; i < 4; i++) {
    static const char *const names[] = { "db.local", "db.site1", "web.local", "web.site1" };
    snprintf (p[i], sizeof p[i], "%s/%s", d, names[i]);
    make_file (p[i], 2 << 20);          /* a 1 MiB device and its label area */
  }
  snprintf (p[4], sizeof p[4], "%s/replog", d);
  snprintf (p[5], sizeof p[5], "%s", d);
  if (asprintf (&text,
                "replog = { path = \"%s\"; size = \"1M\"; mode = \"auto\"; };\n"
                "sites = ( { id = 0; }, { id = 1; }, { id = 2; disconnect_timeout = \"1s\"; } );\n"
                "devices = (\n"
                "  { name = \"db\"; legs = (\n"
                "      { site = 0; path = \"%s\"; direct_io = false; },\n"
                "      { site = 1; path = \"%s\"; direct_io = false;\n"
                "        dirty_log = { type = \"disk\"; path = \"%s/db.1.bitmap\"; }; },\n"
                "      { site = 2; path = \"nbd+unix:///x?socket=%s/no-such.sock\"; } ); },\n"
                "  { name = \"web\"; legs = (\n"
                "      { site = 0; path = \"%s\"; direct_io = false; },\n"
                "      { site = 1; path = \"%s\"; direct_io = false; } ); }\n"
                ");\n"
                "control = { socket = \"%s/control.sock\"; };\n",
                p[4], p[0], p[1], p[5], p[5], p[2], p[3], p[5]) == -1)
    abort ();
  cfg = cfg_load_string (text, "fuzz-control.conf");
  free (text);
  if (!cfg || !(R = replicator_new (cfg))) {
    fprintf (stderr, "fuzz-control: cannot build the instance: %s\n", fz_rep.first_error);
    exit (1);
  }
  if (!site_state_is_dirty_log (site_state (&R->sites[1])) ||
      !site_state_is_dirty_log (site_state (&R->sites[2])) || R->ndevs != 2) {
    fprintf (stderr, "fuzz-control: the instance is not in the expected state\n");
    exit (1);
  }
  save_state ();
  return 0;
}

int
LLVMFuzzerTestOneInput (const uint8_t *data, size_t size)
{
  uint8_t sc;
  char *line, *reply;
  const char *msg;
  struct flat *f;
  bool flat_ok;
  enum kind k, want = K_ERROR;
  char prefix[128] = "";
  size_t len;

  if (size == 0 || size > 8192)
    return 0;
  sc = data[0];
  len = size - 1;
  if (!(line = malloc (len + 1)) || !(f = malloc (sizeof *f)))
    abort ();
  memcpy (line, data + 1, len);
  line[len] = 0;

  check_parser (line, f, &flat_ok);

  scenario (sc);
  if (sc & S_SOCKET) {
    /* One line: up to the first newline, as a client sends it. */
    char *nl = memchr (line, '\n', len);
    size_t n = nl ? (size_t) (nl - line) + 1 : len;
    char *expect_reply, *got;
    got = through_socket (line, n);
    FZ_CHECK ("control-framing", got[0] && got[strlen (got) - 1] == '\n' && strchr (got, '\n') == got + strlen (got) - 1,
              "the socket reply is not one line: %.300s", got);
    got[strlen (got) - 1] = 0;
    if (n >= LINE_MAX_BYTES && !memchr (line, '\n', LINE_MAX_BYTES)) {    /* no newline in 4096 bytes */
      k = classify (got, &msg);
      FZ_CHECK ("control-framing", k == K_ERROR && !strncmp (msg, "bad request: no complete command line", 37),
                "an overlong line got: %.300s", got);
    }
    else {
      /* The state may have changed (pause...): answer again from the same state. */
      restore_state ();
      scenario (sc);
      line[n] = 0;
      expect_reply = control_handle (R, line);
      /* status and metrics carry timings that may differ between the calls */
      enum kind ek = classify (expect_reply, &msg);
      if (ek != K_STATUS && ek != K_METRICS)
        FZ_CHECK ("control-framing", !strcmp (got, expect_reply), "the socket reply %.300s differs from "
                  "control_handle's %.300s", got, expect_reply);
      else
        FZ_CHECK ("control-framing", classify (got, &msg) == ek, "%s over the socket: %.300s",
                  kind_name (ek), got);
      free (expect_reply);
    }
    free (got);
    restore_state ();
    free (line);
    free (f);
    return 0;
  }

  /* What the reply must be, from the state before the command. */
  if (line[0] == '{' && flat_ok)
    want = expected (f, prefix, sizeof prefix);
  fz_reports_reset ();
  reply = control_handle (R, line);
  k = classify (reply, &msg);
  if (line[0] == '{') {
    if (!flat_ok)
      FZ_CHECK ("control-dispatch", k == K_ERROR && !strncmp (msg, "bad request: not a JSON object", 30),
                "a line that is not a flat JSON object got %s: %s", kind_name (k), msg);
    else {
      FZ_CHECK ("control-dispatch", k == want && !strncmp (msg, prefix, strlen (prefix)),
                "got %s '%s', the protocol calls for %s '%s...' (line %.200s)", kind_name (k), msg,
                kind_name (want), prefix, line);
      if (k == K_OK)
        check_effect (f);
    }
  }
  else {
    size_t n = strcspn (line, " \t\r\n");
    if (n == 6 && !strncmp (line, "status", 6))
      FZ_CHECK ("control-dispatch", k == K_STATUS, "'status' got %s", kind_name (k));
    else
      FZ_CHECK ("control-dispatch", k == K_ERROR && (n ? !strncmp (msg, "unknown command", 15)
                                                     : !strcmp (msg, "empty command")),
                "line '%.100s' got %s: %s", line, kind_name (k), msg);
  }
  free (reply);
  restore_state ();
  free (line);
  free (f);
  return 0;
}
