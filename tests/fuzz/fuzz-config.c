/* fuzz-config.c: libFuzzer harness for the configuration parser (src/cfg.c):
 * the libconfig file form and the nbdkit short form (key=value).
 *
 * Input:
 *   - starting with 'S': the short form.  The lines after the 'S' are
 *     key=value arguments (split at the first '='), passed one by one to
 *     cfg_short_set, then cfg_short_finish builds the configuration (as
 *     nbdkit does, nothing more after the first key refused).  A
 *     line "---" ends the arguments: what follows is the content of the
 *     file a config= argument names (the harness writes it to a scratch
 *     file and substitutes its path for config='s value).
 *   - anything else: a libconfig file, parsed with cfg_load_string and,
 *     written to a scratch file, with cfg_load_file.
 * Inputs containing "@include" are skipped: libconfig would open the named
 * file (anything, /dev/stdin included).
 *
 * Invariants checked (ids in brackets):
 *   [config-messages]  a refused configuration reports exactly one error
 *                      (warnings aside), a file's naming the file first;
 *                      an accepted one reports none; cfg_short_set reports
 *                      one error exactly when it returns -1;
 *   [config-valid]     an accepted configuration satisfies what validate()
 *                      promises: replog path, offset % 4096, site ids
 *                      unique and < 16 with site 0 present, 1..32 devices
 *                      with unique valid names, legs with a path, a known
 *                      transport, an existing site, one leg per site, a
 *                      local (site 0) path leg, a label at the end, none,
 *                      or (local leg only) an absolute label file other
 *                      than the leg, a power-of-two region size
 *                      in [4k, 1g], a path for disk dirty logs, a control
 *                      socket, queue depth in [1, 1024], positive timeouts;
 *   [config-leg-path]  every leg of an accepted configuration has a
 *                      non-empty path (after "file://" is taken off);
 *   [config-roundtrip] an accepted configuration, printed back as a
 *                      libconfig file, parses to an equal configuration
 *                      (the short form and the file form build the same
 *                      struct cfg); string and file parsing agree;
 *   [config-numbers]   an integer time in the file (seconds) is converted
 *                      exactly, or refused when it does not fit in
 *                      milliseconds (as the string form "Ns" is);
 *   [config-defaults]  defaulted values follow their documented rule
 *                      (request_timeout = 2 x disconnect_timeout, pull_ahead
 *                      = disconnect_timeout) without wrapping.
 */
#include <config.h>

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include <libconfig.h>

#include "cfg.h"

#include "fuzz-common.h"

static char file_path[600], inner_path[600];

/* ---- a growing string buffer --------------------------------------------------- */

struct sb {
  char *s;
  size_t len, cap;
};

static void sb_printf (struct sb *b, const char *fmt, ...) __attribute__ ((format (printf, 2, 3)));

static void
sb_printf (struct sb *b, const char *fmt, ...)
{
  va_list ap;
  int n;

  for (;;) {
    size_t room = b->cap - b->len;
    va_start (ap, fmt);
    n = vsnprintf (b->s ? b->s + b->len : NULL, b->s ? room : 0, fmt, ap);
    va_end (ap);
    if (n < 0)
      abort ();
    if (b->s && (size_t) n < room) {
      b->len += (size_t) n;
      return;
    }
    b->cap = (b->cap + (size_t) n + 1) * 2;
    if (!(b->s = realloc (b->s, b->cap)))
      abort ();
  }
}

/* A libconfig string literal. */
static void
sb_string (struct sb *b, const char *v)
{
  const unsigned char *p;
  sb_printf (b, "\"");
  for (p = (const unsigned char *) v; *p; p++) {
    if (*p == '"' || *p == '\\')
      sb_printf (b, "\\%c", *p);
    else if (*p < 0x20 || *p >= 0x7f)
      sb_printf (b, "\\x%02x", *p);
    else
      sb_printf (b, "%c", *p);
  }
  sb_printf (b, "\"");
}

/* ---- the configuration printed back as a libconfig file -------------------------- */

static const char *
fb_text (enum cfg_fall_behind k, uint64_t v, char *buf, size_t len)
{
  switch (k) {
  case FB_IOS: snprintf (buf, len, "ios %" PRIu64, v); break;
  case FB_SIZE: snprintf (buf, len, "size %" PRIu64, v); break;
  case FB_TIMEOUT: snprintf (buf, len, "timeout %" PRIu64 "ms", v); break;
  default: snprintf (buf, len, "none"); break;
  }
  return buf;
}

static char *
print_cfg (const struct cfg *c)
{
  struct sb b = { NULL, 0, 0 };
  size_t i, j;
  char fb[64];

  sb_printf (&b, "replog = {\n  path = ");
  sb_string (&b, c->replog.path);
  sb_printf (&b, ";\n  offset = \"%" PRIu64 "\";\n  size = \"%" PRIu64 "\";\n  mode = \"%s\";\n"
             "  commit_interval = \"%" PRIu64 "ms\";\n};\nsites = (\n", c->replog.offset,
             c->replog.size, cfg_mode_name (c->replog.mode), c->replog.commit_interval_ms);
  for (i = 0; i < c->nsites; i++) {
    const struct cfg_site *s = &c->sites[i];
    sb_printf (&b, "  { id = %u; policy = \"%s\"; fall_behind = \"%s\"; disconnect_timeout = \"%"
               PRIu64 "ms\"; pull_ahead = \"%" PRIu64 "ms\"; request_timeout = \"%" PRIu64
               "ms\"; queue_depth = %u; resync_rate = \"%" PRIu64 "\"; rate = \"%" PRIu64
               "B/s\"; sync_deadline = \"%" PRIu64 "ms\"; }%s\n", s->id,
               cfg_policy_name (s->policy), fb_text (s->fall_behind, s->fall_behind_value, fb, sizeof fb),
               s->disconnect_timeout_ms, s->pull_ahead_ms, s->request_timeout_ms, s->queue_depth,
               s->resync_rate, s->rate, s->sync_deadline_ms, i + 1 < c->nsites ? "," : "");
  }
  sb_printf (&b, ");\ndevices = (\n");
  for (i = 0; i < c->ndevices; i++) {
    const struct cfg_device *d = &c->devices[i];
    sb_printf (&b, "  { name = ");
    sb_string (&b, d->name);
    sb_printf (&b, "; size = \"%" PRIu64 "\";\n    legs = (\n", d->size);
    for (j = 0; j < d->nlegs; j++) {
      const struct cfg_leg *l = &d->legs[j];
      char *p = NULL;
      /* validate() strips one "file://" (after taking the transport from
       * the address with it): a path leg whose path reads as a URL, or
       * starts with "file://" itself, needs one in front. */
      if (l->transport == TRANSPORT_PATH &&
          (cfg_transport_of (l->path) != TRANSPORT_PATH || !strncmp (l->path, "file://", 7) ||
           !*l->path) &&
          asprintf (&p, "file://%s", l->path) == -1)
        abort ();
      sb_printf (&b, "      { site = %u; path = ", l->site);
      sb_string (&b, p ? p : l->path);
      free (p);
      if (l->label != LABEL_END) {
        sb_printf (&b, "; label = ");
        sb_string (&b, l->label == LABEL_NONE ? "none" : l->label_path);
      }
      sb_printf (&b, "; direct_io = %s;\n        dirty_log = { type = \"%s\"; region_size = \"%"
                 PRIu64 "\"; sync = %s;", l->direct_io ? "true" : "false",
                 l->dirty_log.type == DIRTYLOG_DISK ? "disk" :
                 l->dirty_log.type == DIRTYLOG_NOLOG ? "nolog" : "core",
                 l->dirty_log.region_size, l->dirty_log.sync ? "true" : "false");
      if (l->dirty_log.path) {
        sb_printf (&b, " path = ");
        sb_string (&b, l->dirty_log.path);
        sb_printf (&b, ";");
      }
      sb_printf (&b, " }; }%s\n", j + 1 < d->nlegs ? "," : "");
    }
    sb_printf (&b, "    );\n  }%s\n", i + 1 < c->ndevices ? "," : "");
  }
  sb_printf (&b, ");\ncontrol = { socket = ");
  sb_string (&b, c->control.socket);
  if (c->control.group) {
    sb_printf (&b, "; group = ");
    sb_string (&b, c->control.group);
  }
  sb_printf (&b, "; };\n");
  return b.s;
}

/* ---- comparisons and checks ------------------------------------------------------------- */

static bool
str_eq (const char *a, const char *b)
{
  return a == b || (a && b && !strcmp (a, b));
}

/* NULL if equal (sources and lines aside), else what differs. */
static const char *
cfg_diff (const struct cfg *a, const struct cfg *b)
{
  size_t i, j;

  if (!str_eq (a->replog.path, b->replog.path) || a->replog.offset != b->replog.offset ||
      a->replog.size != b->replog.size || a->replog.mode != b->replog.mode ||
      a->replog.commit_interval_ms != b->replog.commit_interval_ms)
    return "replog";
  if (!str_eq (a->control.socket, b->control.socket) || !str_eq (a->control.group, b->control.group))
    return "control";
  if (a->nsites != b->nsites)
    return "number of sites";
  for (i = 0; i < a->nsites; i++) {
    const struct cfg_site *x = &a->sites[i], *y = &b->sites[i];
    if (x->id != y->id || x->policy != y->policy || x->fall_behind != y->fall_behind ||
        x->fall_behind_value != y->fall_behind_value ||
        x->disconnect_timeout_ms != y->disconnect_timeout_ms || x->pull_ahead_ms != y->pull_ahead_ms ||
        x->resync_rate != y->resync_rate || x->rate != y->rate || x->request_timeout_ms != y->request_timeout_ms ||
        x->queue_depth != y->queue_depth || x->sync_deadline_ms != y->sync_deadline_ms)
      return "a site";
  }
  if (a->ndevices != b->ndevices)
    return "number of devices";
  for (i = 0; i < a->ndevices; i++) {
    const struct cfg_device *x = &a->devices[i], *y = &b->devices[i];
    if (!str_eq (x->name, y->name) || x->size != y->size || x->nlegs != y->nlegs)
      return "a device";
    for (j = 0; j < x->nlegs; j++) {
      const struct cfg_leg *l = &x->legs[j], *m = &y->legs[j];
      if (l->site != m->site)
        return "a leg's site";
      if (!str_eq (l->path, m->path))
        return "a leg's path";
      if (l->transport != m->transport)
        return "a leg's transport";
      if (l->label != m->label || !str_eq (l->label_path, m->label_path))
        return "a leg's label";
      if (l->direct_io != m->direct_io || l->dirty_log.type != m->dirty_log.type ||
          !str_eq (l->dirty_log.path, m->dirty_log.path) ||
          l->dirty_log.region_size != m->dirty_log.region_size || l->dirty_log.sync != m->dirty_log.sync)
        return "a leg's direct_io or dirty log";
    }
  }
  return NULL;
}

static bool
name_ok (const char *s)
{
  size_t n = s ? strlen (s) : 0;
  if (n == 0 || n > CFG_NAME_MAX)
    return false;
  for (; *s; s++)
    if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') || (*s >= '0' && *s <= '9') ||
          *s == '.' || *s == '_' || *s == '-'))
      return false;
  return true;
}

static void
check_valid (const struct cfg *c)
{
  size_t i, j, k;
  bool site0 = false;

  FZ_CHECK ("config-valid", c->replog.path != NULL, "no replog.path");
  FZ_CHECK ("config-valid", c->replog.offset % 4096 == 0, "replog.offset %" PRIu64, c->replog.offset);
  FZ_CHECK ("config-valid", c->nsites >= 1 && c->nsites <= CFG_MAX_SITES, "%zu sites", c->nsites);
  for (i = 0; i < c->nsites; i++) {
    const struct cfg_site *s = &c->sites[i];
    site0 |= s->id == 0;
    FZ_CHECK ("config-valid", s->id < CFG_MAX_SITES, "site id %u", s->id);
    for (j = 0; j < i; j++)
      FZ_CHECK ("config-valid", c->sites[j].id != s->id, "site id %u twice", s->id);
    FZ_CHECK ("config-valid", s->queue_depth >= 1 && s->queue_depth <= 1024, "queue depth %u",
              s->queue_depth);
    FZ_CHECK ("config-valid", s->disconnect_timeout_ms > 0 && s->pull_ahead_ms > 0,
              "site %u: disconnect_timeout %" PRIu64 " ms, pull_ahead %" PRIu64 " ms", s->id,
              s->disconnect_timeout_ms, s->pull_ahead_ms);
    FZ_CHECK ("config-valid", s->policy == POLICY_SYNC || s->policy == POLICY_ASYNC, "policy");
    FZ_CHECK ("config-valid", s->fall_behind == FB_NONE || s->fall_behind_value > 0,
              "fall_behind with a zero threshold");
    FZ_CHECK ("config-valid", !s->sync_deadline_ms || (s->id && s->policy == POLICY_SYNC &&
                                                       s->sync_deadline_ms < s->disconnect_timeout_ms),
              "site %u: sync_deadline %" PRIu64 " ms", s->id, s->sync_deadline_ms);
  }
  FZ_CHECK ("config-valid", site0, "no site 0");
  FZ_CHECK ("config-valid", c->ndevices >= 1 && c->ndevices <= CFG_MAX_DEVICES, "%zu devices",
            c->ndevices);
  for (i = 0; i < c->ndevices; i++) {
    const struct cfg_device *d = &c->devices[i];
    bool local = false;
    FZ_CHECK ("config-valid", name_ok (d->name), "device name '%s'", d->name ? d->name : "(null)");
    for (j = 0; j < i; j++)
      FZ_CHECK ("config-valid", strcmp (c->devices[j].name, d->name), "device '%s' twice", d->name);
    FZ_CHECK ("config-valid", d->size % 512 == 0, "device size %" PRIu64, d->size);
    for (j = 0; j < d->nlegs; j++) {
      const struct cfg_leg *l = &d->legs[j];
      uint64_t rs = l->dirty_log.region_size;
      FZ_CHECK ("config-leg-path", l->path && *l->path, "device '%s': a leg at site %u has an "
                "empty path", d->name, l->site);
      FZ_CHECK ("config-valid", cfg_site (c, l->site) != NULL, "leg at unknown site %u", l->site);
      for (k = 0; k < j; k++)
        FZ_CHECK ("config-valid", d->legs[k].site != l->site, "two legs at site %u", l->site);
      FZ_CHECK ("config-valid", l->transport == TRANSPORT_PATH || l->transport == TRANSPORT_NBD ||
                l->transport == TRANSPORT_ISCSI, "transport %d", (int) l->transport);
      if (l->site == 0) {
        local = true;
        FZ_CHECK ("config-valid", l->transport == TRANSPORT_PATH, "local leg '%s' is not a path",
                  l->path);
      }
      FZ_CHECK ("config-valid", l->label == LABEL_END || l->label == LABEL_NONE ||
                (l->label == LABEL_FILE && l->site == 0 && l->transport == TRANSPORT_PATH &&
                 l->label_path && l->label_path[0] == '/' && strcmp (l->label_path, l->path)),
                "device '%s': leg at site %u: label kind %d, file '%s'", d->name, l->site,
                (int) l->label, l->label_path ? l->label_path : "(none)");
      FZ_CHECK ("config-valid", rs >= 4096 && rs <= (1u << 30) && !(rs & (rs - 1)),
                "region size %" PRIu64, rs);
      FZ_CHECK ("config-valid", l->dirty_log.type != DIRTYLOG_DISK || l->dirty_log.path,
                "disk dirty log without a path");
    }
    FZ_CHECK ("config-valid", local, "device '%s' without a local leg", d->name);
  }
  FZ_CHECK ("config-valid", c->control.socket != NULL, "no control socket");
}

/* Defaults computed by validate() must not wrap.  `explicit_*`: the site
 * set the value itself (file form: the raw setting, short form: never
 * for site 0).  Checked when the value was defaulted. */
static void
check_defaults (const struct cfg_site *s, bool explicit_pull, bool explicit_request)
{
  if (!explicit_pull)
    FZ_CHECK ("config-defaults", s->pull_ahead_ms == s->disconnect_timeout_ms,
              "site %u: pull_ahead %" PRIu64 " ms is not its disconnect_timeout %" PRIu64 " ms",
              s->id, s->pull_ahead_ms, s->disconnect_timeout_ms);
  /* Twice disconnect_timeout, saturated at the longest time accepted
   * (CFG_MAX_TIME_MS), so that the printed configuration is accepted again;
   * never a wrapped value. */
  if (!explicit_request)
    FZ_CHECK ("config-defaults", s->disconnect_timeout_ms <= CFG_MAX_TIME_MS / 2
              ? s->request_timeout_ms == 2 * s->disconnect_timeout_ms
              : s->request_timeout_ms == CFG_MAX_TIME_MS,
              "site %u: request_timeout %" PRIu64 " ms is not twice disconnect_timeout %" PRIu64
              " ms (the default wrapped)", s->id, s->request_timeout_ms, s->disconnect_timeout_ms);
}

/* Re-parse the printed configuration: it must be accepted and equal. */
static void
check_roundtrip (const struct cfg *c, const char *what)
{
  char *text = print_cfg (c);
  struct cfg *c2;
  const char *diff;

  fz_reports_reset ();
  c2 = cfg_load_string (text, "printed");
  FZ_CHECK ("config-roundtrip", c2 != NULL, "%s: the configuration printed back is refused (%s):\n%s",
            what, fz_rep.first_error, text);
  diff = cfg_diff (c, c2);
  FZ_CHECK ("config-roundtrip", diff == NULL, "%s: printed back and parsed again, %s differs:\n%s",
            what, diff, text);
  cfg_free (c2);
  free (text);
}

/* Integer times in the file form (seconds) against the raw settings. */
static bool
raw_time (const config_setting_t *g, const char *key, uint64_t *ms, bool *is_int, bool *present)
{
  const config_setting_t *m = config_setting_get_member (g, key);
  long long v;

  *present = m != NULL;
  *is_int = false;
  if (!m || (config_setting_type (m) != CONFIG_TYPE_INT && config_setting_type (m) != CONFIG_TYPE_INT64))
    return true;
  *is_int = true;
  v = config_setting_get_int64 (m);
  if (v < 0)
    return true;
  if ((uint64_t) v > UINT64_MAX / 1000)
    return false;                          /* does not fit in milliseconds */
  *ms = (uint64_t) v * 1000;
  return true;
}

static void
check_file_numbers (const char *text, const struct cfg *c)
{
  config_t lc;
  const config_setting_t *sites, *rl;
  int i, n;

  config_init (&lc);
  if (config_read_string (&lc, text) != CONFIG_TRUE) {
    config_destroy (&lc);
    FZ_CHECK ("config-numbers", c == NULL, "accepted a file libconfig cannot parse");
    return;
  }
  if ((rl = config_lookup (&lc, "replog")) && config_setting_type (rl) == CONFIG_TYPE_GROUP) {
    uint64_t ms = 0;
    bool is_int, present;
    bool fits = raw_time (rl, "commit_interval", &ms, &is_int, &present);
    FZ_CHECK ("config-numbers", fits || !c, "replog.commit_interval: an integer number of seconds "
              "too large for milliseconds was accepted (as %" PRIu64 " ms)",
              c ? c->replog.commit_interval_ms : 0);
    if (c && is_int)
      FZ_CHECK ("config-numbers", c->replog.commit_interval_ms == ms,
                "replog.commit_interval %" PRIu64 " ms, expected %" PRIu64, c->replog.commit_interval_ms, ms);
  }
  sites = config_lookup (&lc, "sites");
  n = sites && config_setting_type (sites) == CONFIG_TYPE_LIST ? config_setting_length (sites) : 0;
  for (i = 0; c && i < n; i++) {
    const config_setting_t *g = config_setting_get_elem (sites, (unsigned) i);
    const config_setting_t *idm = config_setting_get_member (g, "id");
    const struct cfg_site *s = idm ? cfg_site (c, (unsigned) config_setting_get_int (idm)) : NULL;
    static const char *const keys[] = { "disconnect_timeout", "pull_ahead", "request_timeout" };
    bool expl[3] = { false, false, false };
    unsigned k;
    if (!s)
      continue;
    for (k = 0; k < 3; k++) {
      uint64_t ms = 0, got;
      bool is_int, present;
      bool fits = raw_time (g, keys[k], &ms, &is_int, &present);
      got = k == 0 ? s->disconnect_timeout_ms : k == 1 ? s->pull_ahead_ms : s->request_timeout_ms;
      expl[k] = present;
      FZ_CHECK ("config-numbers", fits, "site %u: %s: an integer number of seconds too large for "
                "milliseconds was accepted (as %" PRIu64 " ms)", s->id, keys[k], got);
      if (is_int && ms)                       /* 0 stands for the default */
        FZ_CHECK ("config-numbers", got == ms, "site %u: %s is %" PRIu64 " ms, expected %" PRIu64,
                  s->id, keys[k], got, ms);
      if (present && !is_int && got == 0)
        expl[k] = false;
      if (present && is_int && ms == 0)
        expl[k] = false;
    }
    check_defaults (s, expl[1], expl[2]);
  }
  config_destroy (&lc);
}

static void
write_file (const char *path, const char *text, size_t len)
{
  int fd = open (path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd == -1 || write (fd, text, len) != (ssize_t) len) {
    perror (path);
    abort ();
  }
  close (fd);
}

/* ---- the two forms -------------------------------------------------------------------------- */

static void
fuzz_file_form (const char *text)
{
  struct cfg *c, *cf;
  unsigned errors;
  const char *diff;

  fz_reports_reset ();
  c = cfg_load_string (text, "fuzz.conf");
  errors = fz_rep.errors;
  FZ_CHECK ("config-messages", c ? errors == 0 : errors == 1,
            "%s with %u error messages (first: %s)", c ? "accepted" : "refused", errors,
            fz_rep.first_error);
  if (!c)
    FZ_CHECK ("config-messages", !strncmp (fz_rep.first_error, "fuzz.conf:", 10),
              "the error does not start with the file name: %s", fz_rep.first_error);

  /* The same text as a file. */
  write_file (file_path, text, strlen (text));
  fz_reports_reset ();
  cf = cfg_load_file (file_path);
  FZ_CHECK ("config-messages", cf ? fz_rep.errors == 0 : fz_rep.errors == 1,
            "file: %s with %u error messages", cf ? "accepted" : "refused", fz_rep.errors);
  if (!cf)
    FZ_CHECK ("config-messages", !strncmp (fz_rep.first_error, file_path, strlen (file_path)),
              "the error does not start with the file name: %s", fz_rep.first_error);
  FZ_CHECK ("config-roundtrip", !c == !cf, "cfg_load_string %s it, cfg_load_file %s it",
            c ? "accepts" : "refuses", cf ? "accepts" : "refuses");
  if (c && cf) {
    diff = cfg_diff (c, cf);
    FZ_CHECK ("config-roundtrip", diff == NULL, "string and file parses differ in %s", diff);
  }
  check_file_numbers (text, c);
  if (c) {
    check_valid (c);
    check_roundtrip (c, "file form");
  }
  cfg_free (c);
  cfg_free (cf);
}

static void
fuzz_short_form (char *text)
{
  struct cfg_short *s = cfg_short_new ();
  struct cfg *c;
  char *line = text, *inner = NULL;
  bool have_config = false, explicit_pull = false, explicit_request = false;
  size_t nremotes = 0;

  if (!s)
    abort ();
  /* Split off the config= file's content. */
  {
    char *sep = strstr (text, "\n---\n");
    if (!strncmp (text, "---\n", 4))
      sep = text - 1;
    if (sep) {
      *sep = 0;
      inner = sep + 5;
    }
  }
  write_file (inner_path, inner ? inner : "", inner ? strlen (inner) : 0);

  while (line && *line) {
    char *nl = strchr (line, '\n'), *eq;
    const char *key, *value;
    int r;
    if (nl)
      *nl = 0;
    eq = strchr (line, '=');
    key = line;
    value = "";
    if (eq) {
      *eq = 0;
      value = eq + 1;
    }
    if (!strcmp (key, "config"))
      value = inner_path;
    fz_reports_reset ();
    r = cfg_short_set (s, key, value);
    FZ_CHECK ("config-messages", r == -1 ? fz_rep.errors == 1 : fz_rep.errors == 0,
              "cfg_short_set (%s) returned %d with %u error messages", key, r, fz_rep.errors);
    FZ_CHECK ("config-messages", r >= -1 && r <= 1, "cfg_short_set returned %d", r);
    if (r == 0 && !strcmp (key, "config"))
      have_config = true;
    if (r == 0 && !strcmp (key, "remote"))
      nremotes++;
    if (r == 0 && !strcmp (key, "pull-ahead"))
      explicit_pull = true;
    if (r == 0 && !strcmp (key, "request-timeout"))
      explicit_request = true;
    if (r == -1) {
      /* nbdkit stops at the first failed config callback: no
       * config_complete (cfg_short_finish) after it. */
      cfg_short_free (s);
      return;
    }
    line = nl ? nl + 1 : NULL;
  }
  fz_reports_reset ();
  c = cfg_short_finish (s);
  FZ_CHECK ("config-messages", c ? fz_rep.errors == 0 : fz_rep.errors == 1,
            "cfg_short_finish: %s with %u error messages (first: %s)", c ? "accepted" : "refused",
            fz_rep.errors, fz_rep.first_error);
  if (c) {
    size_t i;
    check_valid (c);
    if (!have_config) {
      FZ_CHECK ("config-valid", c->ndevices == 1 && c->devices[0].nlegs == 1 + nremotes &&
                c->nsites == 1 + nremotes, "short form: %zu devices, %zu legs, %zu sites for %zu "
                "remote= keys", c->ndevices, c->devices[0].nlegs, c->nsites, nremotes);
      for (i = 0; i < c->nsites; i++)      /* pull-ahead= and request-timeout= set sites 1.. */
        check_defaults (&c->sites[i], i && explicit_pull, i && explicit_request);
    }
    check_roundtrip (c, have_config ? "short form with config=" : "short form");
  }
  cfg_free (c);
  cfg_short_free (s);
}

int
LLVMFuzzerInitialize (int *argc, char ***argv)
{
  const char *d = fz_workdir ();
  (void) argc;
  (void) argv;
  snprintf (file_path, sizeof file_path, "%s/fuzz.conf", d);
  snprintf (inner_path, sizeof inner_path, "%s/inner.conf", d);
  /* The default control socket depends on these: keep it fixed. */
  setenv ("XDG_RUNTIME_DIR", "/run/user/fuzz", 1);
  fz_reports_install ();
  return 0;
}

int
LLVMFuzzerTestOneInput (const uint8_t *data, size_t size)
{
  char *text;
  size_t i;

  if (size > 65536)
    return 0;
  /* libconfig's @include opens whatever file it names. */
  for (i = 0; i + 8 <= size; i++)
    if (data[i] == '@' && !strncasecmp ((const char *) data + i, "@include", 8))
      return 0;
  if (!(text = malloc (size + 1)))
    abort ();
  memcpy (text, data, size);
  text[size] = 0;
  if (size && text[0] == 'S')
    fuzz_short_form (text + 1);
  else
    fuzz_file_form (text);
  free (text);
  return 0;
}
