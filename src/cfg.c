/* cfg.c: configuration from a libconfig file, and the validation both
 * forms go through (the nbdkit short form is cfg-short.c's).
 *
 * Owns: struct cfg's defaults, life (cfg_new, cfg_free) and lookups; the
 * public parsers and names of cfg.h; the checks every configuration
 * passes (cfg_validate); reading a libconfig file or string.
 * Invariants: strictness is the point: an unknown key, a wrong type or an
 * impossible value is one error naming the file, the line and the key,
 * and the instance does not start; a struct cfg handed out has passed
 * cfg_validate.  Checks that need the legs opened (a leg smaller than the
 * device) are done by the replicator when it opens them.
 * May call: utilities (report, units) and libconfig.  Nothing of
 * cfg-short.c (which calls the internals cfg-int.h declares: calls go one
 * way, cfg-short.c -> this file).  replctl links this file alone.
 */
#include <config.h>

#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <netinet/in.h>

#include <libconfig.h>

#include "cfg.h"
#include "cfg-int.h"
#include "report.h"
#include "units.h"

#define DEFAULT_LOG_SIZE        (UINT64_C(1) << 30)
#define DEFAULT_COMMIT_MS       5
#define DEFAULT_DISCONNECT_MS   30000
#define DEFAULT_QUEUE_DEPTH     32
#define DEFAULT_REGION_SIZE     (64 * 1024)

/* ---- small helpers --------------------------------------------------- */

char *
cfg_xstrdup (const char *s)
{
  char *r = s ? strdup (s) : NULL;
  if (s && !r)
    rep_error ("strdup: %m");
  return r;
}

const char *
cfg_policy_name (enum cfg_policy p)
{
  return p == POLICY_SYNC ? "sync" : "async";
}

const char *
cfg_mode_name (enum cfg_log_mode m)
{
  return m == LOG_MODE_CREATE ? "create" : m == LOG_MODE_OPEN ? "open" : "auto";
}

/* Name to enum; -1 for an unknown name (the caller reports where). */
int
cfg_policy_of (const char *v, enum cfg_policy *p)
{
  if (!strcmp (v, "sync"))
    *p = POLICY_SYNC;
  else if (!strcmp (v, "async"))
    *p = POLICY_ASYNC;
  else
    return -1;
  return 0;
}

int
cfg_log_mode_of (const char *v, enum cfg_log_mode *m)
{
  if (!strcmp (v, "auto"))
    *m = LOG_MODE_AUTO;
  else if (!strcmp (v, "create"))
    *m = LOG_MODE_CREATE;
  else if (!strcmp (v, "open"))
    *m = LOG_MODE_OPEN;
  else
    return -1;
  return 0;
}

int
cfg_transport_of (const char *addr)
{
  const char *colon = strstr (addr, "://");

  if (!colon)
    return TRANSPORT_PATH;
  if (!strncmp (addr, "nbd://", 6) || !strncmp (addr, "nbds://", 7) ||
      !strncmp (addr, "nbd+unix://", 11) || !strncmp (addr, "nbds+unix://", 12))
    return TRANSPORT_NBD;
  if (!strncmp (addr, "iscsi://", 8))
    return TRANSPORT_ISCSI;
  if (!strncmp (addr, "file://", 7))
    return TRANSPORT_PATH;
  return -1;
}

int
cfg_parse_listen (const char *s, char *host, size_t hostlen, int *port)
{
  const char *colon, *h = s;
  size_t hl;
  char buf[INET6_ADDRSTRLEN + 1], *end;
  unsigned char addr[sizeof (struct in6_addr)];
  long p;
  int v6 = s[0] == '[';

  if (v6) {
    const char *close = strchr (s, ']');
    if (!close || close[1] != ':')
      return -1;
    h = s + 1;
    hl = (size_t) (close - h);
    colon = close + 1;
  }
  else {
    colon = strrchr (s, ':');
    if (!colon)
      return -1;
    hl = (size_t) (colon - s);
  }
  if (hl == 0 || hl >= sizeof buf)
    return -1;
  memcpy (buf, h, hl);
  buf[hl] = '\0';
  if (inet_pton (v6 ? AF_INET6 : AF_INET, buf, addr) != 1)
    return -1;
  errno = 0;
  p = strtol (colon + 1, &end, 10);
  if (errno || end == colon + 1 || *end || p < 1 || p > 65535)
    return -1;
  if (host) {
    if (hl >= hostlen)
      return -1;
    memcpy (host, buf, hl + 1);
  }
  if (port)
    *port = (int) p;
  return 0;
}

char *
cfg_default_control_socket (void)
{
  const char *xdg = getenv ("XDG_RUNTIME_DIR");
  char *r = NULL;

  if (geteuid () == 0 || !xdg || !*xdg)
    return cfg_xstrdup ("/run/nbd-replicator/control.sock");
  if (asprintf (&r, "%s/nbd-replicator/control.sock", xdg) == -1) {
    rep_error ("asprintf: %m");
    return NULL;
  }
  return r;
}

void
cfg_format_fall_behind (enum cfg_fall_behind kind, uint64_t value, char *buf, size_t len)
{
  char tmp[32];
  switch (kind) {
  case FB_IOS: snprintf (buf, len, "ios %" PRIu64, value); return;
  case FB_SIZE: snprintf (buf, len, "size %s", units_format_size (value, tmp, sizeof tmp)); return;
  case FB_TIMEOUT: snprintf (buf, len, "timeout %" PRIu64 "ms", value); return;
  case FB_NONE: break;
  }
  snprintf (buf, len, "none");
}

int
cfg_parse_fall_behind (const char *s, enum cfg_fall_behind *kind,
                       uint64_t *value, const char **why)
{
  const char *arg;

  while (isspace ((unsigned char) *s))
    s++;
  if (!strcmp (s, "none") || !*s) {
    *kind = FB_NONE;
    *value = 0;
    return 0;
  }
  if (!strncmp (s, "ios ", 4)) {
    char *end;
    arg = s + 4;
    while (*arg == ' ')
      arg++;
    errno = 0;
    if (!isdigit ((unsigned char) *arg)) {
      *why = "'ios' needs a count of entries";
      return -1;
    }
    *value = strtoull (arg, &end, 10);
    if (errno || *end || *value == 0) {
      *why = "'ios' needs a positive count of entries";
      return -1;
    }
    *kind = FB_IOS;
    return 0;
  }
  /* size and timeout are read alike on purpose: each kind with its own unit
   * parser and its own message. */
  if (!strncmp (s, "size ", 5)) {
    if (units_parse_size (s + 5, value, why) == -1)
      return -1;
    if (*value == 0) {
      *why = "'size' must be positive";
      return -1;
    }
    *kind = FB_SIZE;
    return 0;
  }
  if (!strncmp (s, "timeout ", 8)) {
    if (units_parse_time (s + 8, value, why) == -1)
      return -1;
    if (*value == 0) {
      *why = "'timeout' must be positive";
      return -1;
    }
    *kind = FB_TIMEOUT;
    return 0;
  }
  *why = "expected \"ios N\", \"size N\", \"timeout T\" or \"none\"";
  return -1;
}

static bool
valid_name (const char *s)
{
  size_t n = strlen (s);

  if (n == 0 || n > CFG_NAME_MAX)
    return false;
  for (; *s; s++)
    if (!isalnum ((unsigned char) *s) && !strchr ("._-", *s))
      return false;
  return true;
}

void
cfg_free (struct cfg *c)
{
  size_t i, j;

  if (!c)
    return;
  for (i = 0; i < c->ndevices; i++) {
    for (j = 0; j < c->devices[i].nlegs; j++) {
      free (c->devices[i].legs[j].path);
      free (c->devices[i].legs[j].dirty_log.path);
      free (c->devices[i].legs[j].label_path);
    }
    free (c->devices[i].legs);
    free (c->devices[i].name);
  }
  free (c->devices);
  free (c->sites);
  free (c->replog.path);
  free (c->control.socket);
  free (c->control.group);
  free (c->on_event);
  free (c->metrics.listen);
  free (c->source);
  free (c);
}

const struct cfg_site *
cfg_site (const struct cfg *c, unsigned id)
{
  size_t i;
  for (i = 0; i < c->nsites; i++)
    if (c->sites[i].id == id)
      return &c->sites[i];
  return NULL;
}

const struct cfg_leg *
cfg_leg (const struct cfg_device *d, unsigned site)
{
  size_t i;
  for (i = 0; i < d->nlegs; i++)
    if (d->legs[i].site == site)
      return &d->legs[i];
  return NULL;
}

void
cfg_site_defaults (struct cfg_site *s, unsigned id)
{
  memset (s, 0, sizeof *s);
  s->id = id;
  s->policy = POLICY_ASYNC;
  s->fall_behind = FB_NONE;
  s->disconnect_timeout_ms = DEFAULT_DISCONNECT_MS;
  s->pull_ahead_ms = 0;              /* 0 = same as disconnect_timeout */
  s->request_timeout_ms = 0;         /* 0 = twice disconnect_timeout */
  s->queue_depth = DEFAULT_QUEUE_DEPTH;
}

void
cfg_dirty_log_defaults (struct cfg_dirty_log *d)
{
  memset (d, 0, sizeof *d);
  d->type = DIRTYLOG_CORE;
  d->region_size = DEFAULT_REGION_SIZE;
  d->sync = true;
}

struct cfg *
cfg_new (const char *source)
{
  struct cfg *c = calloc (1, sizeof *c);

  if (!c) {
    rep_error ("calloc: %m");
    return NULL;
  }
  c->source = cfg_xstrdup (source);
  c->replog.size = DEFAULT_LOG_SIZE;
  c->replog.mode = LOG_MODE_AUTO;
  c->replog.commit_interval_ms = DEFAULT_COMMIT_MS;
  return c;
}

/* ---- validation shared by both forms ------------------------------------ */

/* Report "SOURCE:LINE: KEY: message" (line omitted when 0). */
static void
where_error (const struct cfg *c, int line, const char *key, const char *fmt, ...)
  __attribute__ ((format (printf, 4, 5)));
static void
where_error (const struct cfg *c, int line, const char *key, const char *fmt, ...)
{
  char msg[512];
  va_list ap;

  va_start (ap, fmt);
  vsnprintf (msg, sizeof msg, fmt, ap);
  va_end (ap);
  if (line > 0)
    rep_error ("%s:%d: %s: %s", c->source, line, key, msg);
  else
    rep_error ("%s: %s: %s", c->source, key, msg);
}

/* replog.path and replog.offset. */
static int
check_replog (struct cfg *c)
{
  if (!c->replog.path) {
    where_error (c, 0, "replog.path", "required: where the replication log lives");
    return -1;
  }
  if (c->replog.offset % 4096) {
    where_error (c, 0, "replog.offset", "must be a multiple of 4096");
    return -1;
  }
  return 0;
}

/* Site 0 is implied with defaults when not listed. */
static int
imply_site0 (struct cfg *c)
{
  struct cfg_site *n;

  if (cfg_site (c, 0))
    return 0;
  n = realloc (c->sites, (c->nsites + 1) * sizeof *n);
  if (!n) {
    rep_error ("realloc: %m");
    return -1;
  }
  c->sites = n;
  memmove (&c->sites[1], &c->sites[0], c->nsites * sizeof *n);
  cfg_site_defaults (&c->sites[0], 0);
  c->nsites++;
  return 0;
}

/* sync_deadline (0: none) bounds a sync client's wait for a remote site:
 * refused elsewhere, and at or past disconnect_timeout (which bounds every
 * wait first: the deadline would never be reached). */
static int
check_sync_deadline (struct cfg *c, const struct cfg_site *s)
{
  if (!s->sync_deadline_ms)
    return 0;
  if (s->id == 0) {
    where_error (c, s->line, "sync_deadline", "site 0 holds the local legs: a sync_deadline "
                 "bounds the wait for a remote site with policy = \"sync\"");
    return -1;
  }
  if (s->policy != POLICY_SYNC) {
    where_error (c, s->line, "sync_deadline", "site %u: only meaningful with policy = \"sync\" "
                 "(the site is %s)", s->id, cfg_policy_name (s->policy));
    return -1;
  }
  if (s->sync_deadline_ms >= s->disconnect_timeout_ms) {
    where_error (c, s->line, "sync_deadline", "site %u: %" PRIu64 " ms must be shorter than its "
                 "disconnect_timeout (%" PRIu64 " ms)", s->id, s->sync_deadline_ms,
                 s->disconnect_timeout_ms);
    return -1;
  }
  return 0;
}

/* Site i: its id, its times; then the times that default to others. */
static int
check_site (struct cfg *c, size_t i)
{
  struct cfg_site *s = &c->sites[i];
  size_t j, k;

  if (s->id >= CFG_MAX_SITES) {
    where_error (c, s->line, "id", "site id %u out of range (0..%d)", s->id, CFG_MAX_SITES - 1);
    return -1;
  }
  for (j = 0; j < i; j++)
    if (c->sites[j].id == s->id) {
      where_error (c, s->line, "id", "site id %u used twice", s->id);
      return -1;
    }
  /* Times become nanoseconds in 64 bits: keep them far from wrapping. */
  {
    const struct { const char *key; uint64_t ms; } t[] = {
      { "disconnect_timeout", s->disconnect_timeout_ms }, { "pull_ahead", s->pull_ahead_ms },
      { "request_timeout", s->request_timeout_ms }, { "sync_deadline", s->sync_deadline_ms },
      { "fall_behind", s->fall_behind == FB_TIMEOUT ? s->fall_behind_value : 0 },
    };
    for (k = 0; k < sizeof t / sizeof t[0]; k++)
      if (t[k].ms > CFG_MAX_TIME_MS) {
        where_error (c, s->line, t[k].key, "%" PRIu64 " ms is too long (at most 10 years)", t[k].ms);
        return -1;
      }
  }
  if (s->id == 0 && s->rate) {
    where_error (c, s->line, "rate", "site 0 holds the local legs: a rate limits what goes to "
                 "a remote site");
    return -1;
  }
  if (check_sync_deadline (c, s) == -1)
    return -1;
  if (s->pull_ahead_ms == 0)
    s->pull_ahead_ms = s->disconnect_timeout_ms;
  if (s->request_timeout_ms == 0)       /* twice disconnect_timeout, within the cap */
    s->request_timeout_ms = s->disconnect_timeout_ms > CFG_MAX_TIME_MS / 2
      ? CFG_MAX_TIME_MS : 2 * s->disconnect_timeout_ms;
  return 0;
}

/* Leg j of device d: its path (a "file://" prefix dropped), transport,
 * site, dirty log. */
static int
check_leg (struct cfg *c, struct cfg_device *d, size_t j)
{
  struct cfg_leg *l = &d->legs[j];
  size_t k;
  int t;

  if (!l->path || !*l->path) {
    where_error (c, l->line, "path", "device '%s': every leg needs a path", d->name);
    return -1;
  }
  t = cfg_transport_of (l->path);
  if (!strncmp (l->path, "file://", 7))       /* a plain path from here on */
    memmove (l->path, l->path + 7, strlen (l->path + 7) + 1);
  if (!*l->path) {
    where_error (c, l->line, "path", "device '%s': \"file://\" names no file", d->name);
    return -1;
  }
  if (t < 0) {
    where_error (c, l->line, "path",
                 "unknown transport in '%s' (use a path, nbd://, nbd+unix://, nbds:// or iscsi://)",
                 l->path);
    return -1;
  }
  l->transport = t;
  if (!cfg_site (c, l->site)) {
    where_error (c, l->line, "site", "device '%s': leg names unknown site %u", d->name, l->site);
    return -1;
  }
  for (k = 0; k < j; k++)
    if (d->legs[k].site == l->site) {
      where_error (c, l->line, "site", "device '%s' has two legs at site %u", d->name, l->site);
      return -1;
    }
  if (l->site == 0 && l->transport != TRANSPORT_PATH) {
    where_error (c, l->line, "path",
                 "device '%s': the local leg (site 0) must be a file or block device, not '%s'",
                 d->name, l->path);
    return -1;
  }
  if (l->dirty_log.region_size < 4096 || l->dirty_log.region_size > (1u << 30) ||
      (l->dirty_log.region_size & (l->dirty_log.region_size - 1))) {
    where_error (c, l->line, "region_size", "must be a power of two from 4k to 1g");
    return -1;
  }
  if (l->dirty_log.type == DIRTYLOG_DISK && !l->dirty_log.path) {
    where_error (c, l->line, "dirty_log.path", "a 'disk' dirty log needs a path");
    return -1;
  }
  if (l->label == LABEL_FILE && (l->site != 0 || l->transport != TRANSPORT_PATH)) {
    where_error (c, l->line, "label", "device '%s': a label file is for the local leg (site 0) "
                 "only; a remote leg carries its label at its end (\"end\") or none", d->name);
    return -1;
  }
  if (l->label == LABEL_FILE && !strcmp (l->label_path, l->path)) {
    where_error (c, l->line, "label", "device '%s': the label file cannot be the leg itself", d->name);
    return -1;
  }
  return 0;
}

/* Device i: its name, size, legs, and a local leg among them. */
static int
check_device (struct cfg *c, size_t i)
{
  struct cfg_device *d = &c->devices[i];
  size_t j;

  if (!d->name || !valid_name (d->name)) {
    where_error (c, d->line, "name",
                 "device name '%s' must be 1-%d characters of A-Z a-z 0-9 . _ -",
                 d->name ? d->name : "", CFG_NAME_MAX);
    return -1;
  }
  for (j = 0; j < i; j++)
    if (!strcmp (c->devices[j].name, d->name)) {
      where_error (c, d->line, "name", "device name '%s' used twice", d->name);
      return -1;
    }
  if (d->size % 512) {
    where_error (c, d->line, "size", "device size must be a multiple of 512");
    return -1;
  }
  for (j = 0; j < d->nlegs; j++)
    if (check_leg (c, d, j) == -1)
      return -1;
  if (!cfg_leg (d, 0)) {
    where_error (c, d->line, "legs", "device '%s' has no local leg (site 0)", d->name);
    return -1;
  }
  return 0;
}

/* The control socket (its default) and the event hook. */
static int
check_control (struct cfg *c)
{
  if (!c->control.socket && !(c->control.socket = cfg_default_control_socket ()))
    return -1;
  if (c->on_event) {
    if (c->on_event[0] != '/') {
      where_error (c, 0, "on_event", "must be an absolute path: %s", c->on_event);
      return -1;
    }
    if (access (c->on_event, X_OK) == -1) {
      where_error (c, 0, "on_event", "%s: cannot be run: %s", c->on_event, strerror (errno));
      return -1;
    }
  }
  return 0;
}

int
cfg_validate (struct cfg *c)
{
  size_t i;

  if (check_replog (c) == -1 || imply_site0 (c) == -1)
    return -1;
  for (i = 0; i < c->nsites; i++)
    if (check_site (c, i) == -1)
      return -1;
  if (c->replog.commit_interval_ms > CFG_MAX_TIME_MS) {
    where_error (c, 0, "replog.commit_interval", "%" PRIu64 " ms is too long (at most 10 years)",
                 c->replog.commit_interval_ms);
    return -1;
  }
  if (c->ndevices == 0) {
    where_error (c, 0, "devices", "at least one device is required");
    return -1;
  }
  if (c->ndevices > CFG_MAX_DEVICES) {
    where_error (c, c->devices[CFG_MAX_DEVICES].line, "devices",
                 "at most %d devices share one log", CFG_MAX_DEVICES);
    return -1;
  }
  for (i = 0; i < c->ndevices; i++)
    if (check_device (c, i) == -1)
      return -1;
  return check_control (c);
}

/* ---- libconfig file ------------------------------------------------------- */

struct fctx {
  struct cfg *c;
  const char *key;       /* for messages: the key being read */
};

static int
setting_line (const config_setting_t *s)
{
  return (int) config_setting_source_line (s);
}

/* Reject members of a group that are not in allowed (NULL-terminated). */
static int
check_keys (struct cfg *c, const config_setting_t *grp, const char *what,
            const char *const *allowed)
{
  int i, n = config_setting_length (grp);

  for (i = 0; i < n; i++) {
    const config_setting_t *m = config_setting_get_elem (grp, i);
    const char *name = config_setting_name (m);
    const char *const *a;
    for (a = allowed; *a; a++)
      if (name && !strcmp (name, *a))
        break;
    if (!*a) {
      where_error (c, setting_line (m), name ? name : "?", "unknown key in %s", what);
      return -1;
    }
  }
  return 0;
}

static int
get_string (struct cfg *c, const config_setting_t *s, const char *key, char **out)
{
  const char *v;
  if (config_setting_type (s) != CONFIG_TYPE_STRING) {
    where_error (c, setting_line (s), key, "must be a string");
    return -1;
  }
  v = config_setting_get_string (s);
  free (*out);
  *out = cfg_xstrdup (v);
  return *out ? 0 : -1;
}

/* A size or a time: a non-negative integer (bytes; seconds, times MULT =
 * 1000 into milliseconds) or a string with a suffix, read by PARSE.  MUSTBE
 * says what the value must be, for the message. */
static int
get_amount (struct cfg *c, const config_setting_t *s, const char *key, uint64_t mult,
            int (*parse) (const char *, uint64_t *, const char **), const char *mustbe,
            uint64_t *out)
{
  const char *why;
  int t = config_setting_type (s);

  if (t == CONFIG_TYPE_INT || t == CONFIG_TYPE_INT64) {
    long long v = config_setting_get_int64 (s);
    if (v < 0) {
      where_error (c, setting_line (s), key, "must not be negative");
      return -1;
    }
    if ((uint64_t) v > UINT64_MAX / mult) {
      where_error (c, setting_line (s), key, "%lld seconds: value too large", (long long) v);
      return -1;
    }
    *out = (uint64_t) v * mult;
    return 0;
  }
  if (t != CONFIG_TYPE_STRING) {
    where_error (c, setting_line (s), key, "%s", mustbe);
    return -1;
  }
  if (parse (config_setting_get_string (s), out, &why) == -1) {
    where_error (c, setting_line (s), key, "'%s': %s", config_setting_get_string (s), why);
    return -1;
  }
  return 0;
}

static int
get_size (struct cfg *c, const config_setting_t *s, const char *key, uint64_t *out)
{
  return get_amount (c, s, key, 1, units_parse_size,
                     "must be a size (a number or a string like \"64M\")", out);
}

static int
get_time (struct cfg *c, const config_setting_t *s, const char *key, uint64_t *ms)
{
  return get_amount (c, s, key, 1000, units_parse_time,
                     "must be a time (a number of seconds or a string like \"30s\")", ms);
}

/* A site's rate: a string with its unit (bits or bytes per second), or
 * the integer 0 (no limit): a bare number would not say which. */
static int
get_rate (struct cfg *c, const config_setting_t *s, uint64_t *out)
{
  const char *why, *v;
  int t = config_setting_type (s);

  if ((t == CONFIG_TYPE_INT || t == CONFIG_TYPE_INT64) && config_setting_get_int64 (s) == 0) {
    *out = 0;
    return 0;
  }
  if (t != CONFIG_TYPE_STRING) {
    where_error (c, setting_line (s), "rate", "must be a string with its unit, like \"100Mbit\" "
                 "(bits per second) or \"12MB/s\" (bytes per second), or 0 for no limit");
    return -1;
  }
  v = config_setting_get_string (s);
  if (units_parse_rate (v, out, &why) == -1) {
    where_error (c, setting_line (s), "rate", "'%s': %s", v, why);
    return -1;
  }
  return 0;
}

static int
get_uint (struct cfg *c, const config_setting_t *s, const char *key,
          unsigned lo, unsigned hi, unsigned *out)
{
  long long v;
  int t = config_setting_type (s);

  if (t != CONFIG_TYPE_INT && t != CONFIG_TYPE_INT64) {
    where_error (c, setting_line (s), key, "must be an integer");
    return -1;
  }
  v = config_setting_get_int64 (s);
  if (v < lo || v > hi) {
    where_error (c, setting_line (s), key, "%lld out of range (%u..%u)", v, lo, hi);
    return -1;
  }
  *out = (unsigned) v;
  return 0;
}

static int
get_bool (struct cfg *c, const config_setting_t *s, const char *key, bool *out)
{
  if (config_setting_type (s) != CONFIG_TYPE_BOOL) {
    where_error (c, setting_line (s), key, "must be true or false");
    return -1;
  }
  *out = config_setting_get_bool (s);
  return 0;
}

static int
parse_policy (struct cfg *c, const config_setting_t *s, enum cfg_policy *p)
{
  char *v = NULL;
  int r = 0;

  if (get_string (c, s, "policy", &v) == -1)
    return -1;
  if (cfg_policy_of (v, p) == -1) {
    where_error (c, setting_line (s), "policy", "'%s': expected \"sync\" or \"async\"", v);
    r = -1;
  }
  free (v);
  return r;
}

static int
load_replog (struct cfg *c, const config_setting_t *g)
{
  static const char *const keys[] = { "path", "offset", "size", "mode", "commit_interval", NULL };
  const config_setting_t *m;

  if (config_setting_type (g) != CONFIG_TYPE_GROUP) {
    where_error (c, setting_line (g), "replog", "must be a group { ... }");
    return -1;
  }
  if (check_keys (c, g, "replog", keys) == -1)
    return -1;
  if ((m = config_setting_get_member (g, "path")) && get_string (c, m, "replog.path", &c->replog.path) == -1)
    return -1;
  if ((m = config_setting_get_member (g, "offset")) && get_size (c, m, "replog.offset", &c->replog.offset) == -1)
    return -1;
  if ((m = config_setting_get_member (g, "size")) && get_size (c, m, "replog.size", &c->replog.size) == -1)
    return -1;
  if ((m = config_setting_get_member (g, "commit_interval")) &&
      get_time (c, m, "replog.commit_interval", &c->replog.commit_interval_ms) == -1)
    return -1;
  if ((m = config_setting_get_member (g, "mode"))) {
    char *v = NULL;
    if (get_string (c, m, "replog.mode", &v) == -1)
      return -1;
    if (cfg_log_mode_of (v, &c->replog.mode) == -1) {
      where_error (c, setting_line (m), "replog.mode", "'%s': expected create, open or auto", v);
      free (v);
      return -1;
    }
    free (v);
  }
  if (!c->replog.path) {
    where_error (c, setting_line (g), "replog.path", "required");
    return -1;
  }
  return 0;
}

static int
load_site (struct cfg *c, const config_setting_t *g, struct cfg_site *s)
{
  static const char *const keys[] = {
    "id", "policy", "fall_behind", "disconnect_timeout", "pull_ahead", "request_timeout",
    "queue_depth", "resync_rate", "rate", "sync_deadline", NULL
  };
  const config_setting_t *m;

  if (config_setting_type (g) != CONFIG_TYPE_GROUP) {
    where_error (c, setting_line (g), "sites", "each site must be a group { ... }");
    return -1;
  }
  cfg_site_defaults (s, 0);
  s->line = setting_line (g);
  if (check_keys (c, g, "a site", keys) == -1)
    return -1;
  if (!(m = config_setting_get_member (g, "id"))) {
    where_error (c, s->line, "id", "every site needs an id");
    return -1;
  }
  if (get_uint (c, m, "id", 0, CFG_MAX_SITES - 1, &s->id) == -1)
    return -1;
  if ((m = config_setting_get_member (g, "policy")) && parse_policy (c, m, &s->policy) == -1)
    return -1;
  if ((m = config_setting_get_member (g, "fall_behind"))) {
    char *v = NULL;
    const char *why;
    if (get_string (c, m, "fall_behind", &v) == -1)
      return -1;
    if (cfg_parse_fall_behind (v, &s->fall_behind, &s->fall_behind_value, &why) == -1) {
      where_error (c, setting_line (m), "fall_behind", "'%s': %s", v, why);
      free (v);
      return -1;
    }
    free (v);
  }
  if ((m = config_setting_get_member (g, "disconnect_timeout")) &&
      get_time (c, m, "disconnect_timeout", &s->disconnect_timeout_ms) == -1)
    return -1;
  if ((m = config_setting_get_member (g, "pull_ahead")) &&
      get_time (c, m, "pull_ahead", &s->pull_ahead_ms) == -1)
    return -1;
  if ((m = config_setting_get_member (g, "request_timeout")) &&
      get_time (c, m, "request_timeout", &s->request_timeout_ms) == -1)
    return -1;
  if ((m = config_setting_get_member (g, "sync_deadline")) &&
      get_time (c, m, "sync_deadline", &s->sync_deadline_ms) == -1)
    return -1;
  if ((m = config_setting_get_member (g, "queue_depth")) &&
      get_uint (c, m, "queue_depth", 1, MAX_QUEUE_DEPTH, &s->queue_depth) == -1)
    return -1;
  if ((m = config_setting_get_member (g, "resync_rate")) &&
      get_size (c, m, "resync_rate", &s->resync_rate) == -1)
    return -1;
  if ((m = config_setting_get_member (g, "rate")) && get_rate (c, m, &s->rate) == -1)
    return -1;
  if (s->disconnect_timeout_ms == 0) {
    m = config_setting_get_member (g, "disconnect_timeout");
    where_error (c, m ? setting_line (m) : s->line, "disconnect_timeout", "must be positive");
    return -1;
  }
  return 0;
}

static int
load_dirty_log (struct cfg *c, const config_setting_t *g, struct cfg_dirty_log *d)
{
  static const char *const keys[] = { "type", "path", "region_size", "sync", NULL };
  const config_setting_t *m;

  if (config_setting_type (g) != CONFIG_TYPE_GROUP) {
    where_error (c, setting_line (g), "dirty_log", "must be a group { ... }");
    return -1;
  }
  if (check_keys (c, g, "dirty_log", keys) == -1)
    return -1;
  if ((m = config_setting_get_member (g, "type"))) {
    char *v = NULL;
    if (get_string (c, m, "dirty_log.type", &v) == -1)
      return -1;
    if (!strcmp (v, "core"))
      d->type = DIRTYLOG_CORE;
    else if (!strcmp (v, "disk"))
      d->type = DIRTYLOG_DISK;
    else if (!strcmp (v, "nolog"))
      d->type = DIRTYLOG_NOLOG;
    else {
      where_error (c, setting_line (m), "dirty_log.type", "'%s': expected nolog, core or disk", v);
      free (v);
      return -1;
    }
    free (v);
  }
  if ((m = config_setting_get_member (g, "path")) && get_string (c, m, "dirty_log.path", &d->path) == -1)
    return -1;
  if ((m = config_setting_get_member (g, "region_size")) &&
      get_size (c, m, "dirty_log.region_size", &d->region_size) == -1)
    return -1;
  if ((m = config_setting_get_member (g, "sync")) && get_bool (c, m, "dirty_log.sync", &d->sync) == -1)
    return -1;
  return 0;
}

static int
load_leg (struct cfg *c, const config_setting_t *g, struct cfg_leg *l)
{
  static const char *const keys[] = { "site", "path", "dirty_log", "direct_io", "label", NULL };
  const config_setting_t *m;

  cfg_dirty_log_defaults (&l->dirty_log);
  l->direct_io = true;
  l->line = setting_line (g);
  if (config_setting_type (g) != CONFIG_TYPE_GROUP) {
    where_error (c, l->line, "legs", "each leg must be a group { ... }");
    return -1;
  }
  if (check_keys (c, g, "a leg", keys) == -1)
    return -1;
  if (!(m = config_setting_get_member (g, "site"))) {
    where_error (c, l->line, "site", "every leg needs a site");
    return -1;
  }
  if (get_uint (c, m, "site", 0, CFG_MAX_SITES - 1, &l->site) == -1)
    return -1;
  if (!(m = config_setting_get_member (g, "path"))) {
    where_error (c, l->line, "path", "every leg needs a path");
    return -1;
  }
  if (get_string (c, m, "path", &l->path) == -1)
    return -1;
  if ((m = config_setting_get_member (g, "dirty_log")) && load_dirty_log (c, m, &l->dirty_log) == -1)
    return -1;
  if ((m = config_setting_get_member (g, "direct_io")) && get_bool (c, m, "direct_io", &l->direct_io) == -1)
    return -1;
  if ((m = config_setting_get_member (g, "label"))) {
    char *v = NULL;
    const char *why;
    if (get_string (c, m, "label", &v) == -1)
      return -1;
    if (cfg_parse_label (v, &l->label, &l->label_path, &why) == -1) {
      where_error (c, setting_line (m), "label", "'%s': %s", v, why);
      free (v);
      return -1;
    }
    free (v);
  }
  return 0;
}

int
cfg_parse_label (const char *v, enum cfg_label *kind, char **path, const char **why)
{
  *path = NULL;
  if (!strcmp (v, "end"))
    *kind = LABEL_END;
  else if (!strcmp (v, "none"))
    *kind = LABEL_NONE;
  else if (v[0] == '/' && v[1]) {
    *kind = LABEL_FILE;
    if (!(*path = strdup (v))) {
      *why = "out of memory";
      return -1;
    }
  }
  else {
    *why = "expected end, none or the absolute path of a label file";
    return -1;
  }
  return 0;
}

static int
load_device (struct cfg *c, const config_setting_t *g, struct cfg_device *d)
{
  static const char *const keys[] = { "name", "size", "legs", NULL };
  const config_setting_t *m;
  int i, n;

  d->line = setting_line (g);
  if (config_setting_type (g) != CONFIG_TYPE_GROUP) {
    where_error (c, d->line, "devices", "each device must be a group { ... }");
    return -1;
  }
  if (check_keys (c, g, "a device", keys) == -1)
    return -1;
  if (!(m = config_setting_get_member (g, "name"))) {
    where_error (c, d->line, "name", "every device needs a name");
    return -1;
  }
  if (get_string (c, m, "name", &d->name) == -1)
    return -1;
  if ((m = config_setting_get_member (g, "size")) && get_size (c, m, "size", &d->size) == -1)
    return -1;
  if (!(m = config_setting_get_member (g, "legs")) ||
      (config_setting_type (m) != CONFIG_TYPE_LIST && config_setting_type (m) != CONFIG_TYPE_ARRAY)) {
    where_error (c, m ? setting_line (m) : d->line, "legs",
                 "device '%s' needs a list of legs ( { site = 0; path = ...; }, ... )", d->name);
    return -1;
  }
  n = config_setting_length (m);
  d->legs = calloc (n ? n : 1, sizeof *d->legs);
  if (!d->legs) {
    rep_error ("calloc: %m");
    return -1;
  }
  for (i = 0; i < n; i++) {
    d->nlegs++;
    if (load_leg (c, config_setting_get_elem (m, i), &d->legs[i]) == -1)
      return -1;
  }
  return 0;
}

static int
load_control (struct cfg *c, const config_setting_t *g)
{
  static const char *const keys[] = { "socket", "group", NULL };
  const config_setting_t *m;

  if (config_setting_type (g) != CONFIG_TYPE_GROUP) {
    where_error (c, setting_line (g), "control", "must be a group { ... }");
    return -1;
  }
  if (check_keys (c, g, "control", keys) == -1)
    return -1;
  if ((m = config_setting_get_member (g, "socket")) && get_string (c, m, "control.socket", &c->control.socket) == -1)
    return -1;
  if ((m = config_setting_get_member (g, "group")) && get_string (c, m, "control.group", &c->control.group) == -1)
    return -1;
  return 0;
}

static int
load_metrics (struct cfg *c, const config_setting_t *g)
{
  static const char *const keys[] = { "listen", NULL };
  const config_setting_t *m;

  if (config_setting_type (g) != CONFIG_TYPE_GROUP) {
    where_error (c, setting_line (g), "metrics", "must be a group { listen = \"HOST:PORT\"; }");
    return -1;
  }
  if (check_keys (c, g, "metrics", keys) == -1)
    return -1;
  if ((m = config_setting_get_member (g, "listen")) &&
      get_string (c, m, "metrics.listen", &c->metrics.listen) == -1)
    return -1;
  if (c->metrics.listen && cfg_parse_listen (c->metrics.listen, NULL, 0, NULL) == -1) {
    where_error (c, setting_line (m), "metrics.listen",
                 "expected HOST:PORT with a numeric IPv4 or [IPv6] address and a port 1-65535: %s",
                 c->metrics.listen);
    return -1;
  }
  return 0;
}

static int
load_list (struct cfg *c, const config_setting_t *l, const char *key,
           void **arr, size_t *count, size_t elsize,
           int (*one) (struct cfg *, const config_setting_t *, void *))
{
  int i, n;

  if (config_setting_type (l) != CONFIG_TYPE_LIST) {
    where_error (c, setting_line (l), key, "must be a list ( { ... }, { ... } )");
    return -1;
  }
  n = config_setting_length (l);
  *arr = calloc (n ? n : 1, elsize);
  if (!*arr) {
    rep_error ("calloc: %m");
    return -1;
  }
  for (i = 0; i < n; i++) {
    (*count)++;
    if (one (c, config_setting_get_elem (l, i), (char *) *arr + (size_t) i * elsize) == -1)
      return -1;
  }
  return 0;
}

static int
one_site (struct cfg *c, const config_setting_t *s, void *p)
{
  return load_site (c, s, p);
}

static int
one_device (struct cfg *c, const config_setting_t *s, void *p)
{
  return load_device (c, s, p);
}

static struct cfg *
load_config (config_t *lc, const char *name)
{
  static const char *const keys[] = { "replog", "sites", "devices", "control", "on_event",
                                      "metrics", "receiver", NULL };
  struct cfg *c = cfg_new (name);
  const config_setting_t *root, *m;

  if (!c)
    return NULL;
  root = config_root_setting (lc);
  if (check_keys (c, root, "the top level", keys) == -1)
    goto err;
  if (!(m = config_lookup (lc, "replog"))) {
    where_error (c, 0, "replog", "required: replog = { path = \"...\"; };");
    goto err;
  }
  if (load_replog (c, m) == -1)
    goto err;
  if ((m = config_lookup (lc, "sites")) &&
      load_list (c, m, "sites", (void **) &c->sites, &c->nsites, sizeof *c->sites, one_site) == -1)
    goto err;
  if (!(m = config_lookup (lc, "devices"))) {
    where_error (c, 0, "devices", "required: devices = ( { name = ...; legs = (...); } );");
    goto err;
  }
  if (load_list (c, m, "devices", (void **) &c->devices, &c->ndevices, sizeof *c->devices, one_device) == -1)
    goto err;
  if ((m = config_lookup (lc, "control")) && load_control (c, m) == -1)
    goto err;
  if ((m = config_lookup (lc, "on_event")) && get_string (c, m, "on_event", &c->on_event) == -1)
    goto err;
  if ((m = config_lookup (lc, "metrics")) && load_metrics (c, m) == -1)
    goto err;
  if ((m = config_lookup (lc, "receiver")) && get_bool (c, m, "receiver", &c->receiver) == -1)
    goto err;
  if (cfg_validate (c) == -1)
    goto err;
  return c;
 err:
  cfg_free (c);
  return NULL;
}

static struct cfg *
load_common (config_t *lc, int ok, const char *name)
{
  struct cfg *c = NULL;

  if (!ok) {
    if (config_error_type (lc) == CONFIG_ERR_FILE_IO)
      rep_error ("%s: cannot read configuration file: %m", name);
    else
      rep_error ("%s:%d: syntax error: %s", config_error_file (lc) ? config_error_file (lc) : name,
                 config_error_line (lc), config_error_text (lc));
  }
  else
    c = load_config (lc, name);
  config_destroy (lc);
  return c;
}

struct cfg *
cfg_load_file (const char *path)
{
  config_t lc;
  config_init (&lc);
  return load_common (&lc, config_read_file (&lc, path) == CONFIG_TRUE, path);
}

struct cfg *
cfg_load_string (const char *text, const char *name)
{
  config_t lc;
  config_init (&lc);
  return load_common (&lc, config_read_string (&lc, text) == CONFIG_TRUE, name);
}
