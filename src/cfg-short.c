/* cfg-short.c: the configuration from the nbdkit short form.
 *
 * Owns: struct cfg_short, the key=value pairs nbdkit passes (log=,
 * local=, remote=, ...; config= names a libconfig file instead), collected
 * key by key, then turned into a struct cfg of one device with a leg per
 * site, or read from the file config= names.
 * Invariants: a key is checked when it is given (one error naming the
 * key and its value); config= goes with no other key but control=,
 * on-event= and metrics-listen= (which override the file's); whichever
 * way, the result has passed cfg_validate.
 * May call: cfg.c (cfg.h, and the internals cfg-int.h declares), utilities
 * (report, units).  cfg.c calls nothing here.
 */
#include <config.h>

#include <errno.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cfg.h"
#include "cfg-int.h"
#include "report.h"
#include "units.h"

struct cfg_short {
  char *config_file;
  char *log, *local, *control, *name, *dirty_log_dir, *on_event, *metrics_listen;
  char **remotes;
  size_t nremotes;
  uint64_t log_size, log_offset, size, region_size, disconnect_ms, commit_ms;
  uint64_t pull_ahead_ms, request_timeout_ms, resync_rate, rate, sync_deadline_ms;
  bool have_resync_rate, have_rate, have_sync_deadline;
  bool have_log_size, have_size, have_region, have_disconnect, have_commit;
  bool have_pull_ahead, have_request_timeout;
  bool initial_sync, have_initial_sync;
  enum cfg_log_mode mode;
  bool have_mode;
  enum cfg_policy policy, local_policy;
  bool have_policy, have_local_policy;
  enum cfg_fall_behind fb;
  uint64_t fb_value;
  bool have_fb;
  unsigned queue_depth;
  bool direct_io, have_direct_io;
  enum cfg_label label, local_label;  /* label=: every leg; local-label=: site 0 */
  char *local_label_path;
  bool have_label, have_local_label;
  bool takeover;                    /* takeover=: a global key, also with config= */
  bool failback;                    /* failback=: likewise */
  bool receiver;                    /* receiver=: likewise */
  int nkeys;                        /* keys other than config=, control=, on-event=
                                       and metrics-listen= */
};

struct cfg_short *
cfg_short_new (void)
{
  struct cfg_short *s = calloc (1, sizeof *s);
  if (!s)
    rep_error ("calloc: %m");
  return s;
}

void
cfg_short_free (struct cfg_short *s)
{
  size_t i;
  if (!s)
    return;
  free (s->config_file);
  free (s->log);
  free (s->local);
  free (s->control);
  free (s->on_event);
  free (s->metrics_listen);
  free (s->name);
  free (s->dirty_log_dir);
  free (s->local_label_path);
  for (i = 0; i < s->nremotes; i++)
    free (s->remotes[i]);
  free (s->remotes);
  free (s);
}

const char *
cfg_short_config_file (const struct cfg_short *s)
{
  return s->config_file;
}

/* key=value, a size or a time read by PARSE (units.h). */
static int
short_amount (const char *key, const char *value, int (*parse) (const char *, uint64_t *, const char **),
              uint64_t *out, bool *have)
{
  const char *why;
  if (parse (value, out, &why) == -1) {
    rep_error ("%s=%s: %s", key, value, why);
    return -1;
  }
  *have = true;
  return 0;
}

static int
short_size (const char *key, const char *value, uint64_t *out, bool *have)
{
  return short_amount (key, value, units_parse_size, out, have);
}

static int
short_time (const char *key, const char *value, uint64_t *out, bool *have)
{
  return short_amount (key, value, units_parse_time, out, have);
}

static int
short_policy (const char *key, const char *value, enum cfg_policy *p, bool *have)
{
  if (cfg_policy_of (value, p) == -1) {
    rep_error ("%s=%s: expected sync or async", key, value);
    return -1;
  }
  *have = true;
  return 0;
}

static int
short_bool (const char *key, const char *value, bool *out, bool *have)
{
  if (!strcmp (value, "true") || !strcmp (value, "on") || !strcmp (value, "1") || !strcmp (value, "yes"))
    *out = true;
  else if (!strcmp (value, "false") || !strcmp (value, "off") || !strcmp (value, "0") || !strcmp (value, "no"))
    *out = false;
  else {
    rep_error ("%s=%s: expected true or false", key, value);
    return -1;
  }
  *have = true;
  return 0;
}

static int
short_str (char **dst, const char *key, const char *value)
{
  if (*dst) {
    rep_error ("%s= given twice", key);
    return -1;
  }
  return (*dst = cfg_xstrdup (value)) ? 0 : -1;
}

/* The keys that go with config= too.  1 if key is not one of them.  This and
 * the set_*_key functions below are alike on purpose: one chain of key
 * names each, grouped by what the keys set. */
static int
set_global_key (struct cfg_short *s, const char *key, const char *value)
{
  if (!strcmp (key, "config"))
    return short_str (&s->config_file, key, value);
  if (!strcmp (key, "control"))
    return short_str (&s->control, key, value);
  if (!strcmp (key, "on-event"))
    return short_str (&s->on_event, key, value);
  if (!strcmp (key, "takeover")) {
    bool dummy;
    return short_bool (key, value, &s->takeover, &dummy);
  }
  if (!strcmp (key, "failback")) {
    bool dummy;
    return short_bool (key, value, &s->failback, &dummy);
  }
  if (!strcmp (key, "receiver")) {
    bool dummy;
    return short_bool (key, value, &s->receiver, &dummy);
  }
  if (!strcmp (key, "metrics-listen")) {
    if (cfg_parse_listen (value, NULL, 0, NULL) == -1) {
      rep_error ("metrics-listen=%s: expected HOST:PORT with a numeric IPv4 or [IPv6] address "
                 "and a port 1-65535", value);
      return -1;
    }
    return short_str (&s->metrics_listen, key, value);
  }
  return 1;
}

/* Where things are: the log, the legs, the device's name, the dirty
 * logs' directory.  1 if key is not one of them. */
static int
set_place_key (struct cfg_short *s, const char *key, const char *value)
{
  if (!strcmp (key, "log"))
    return short_str (&s->log, key, value);
  if (!strcmp (key, "local"))
    return short_str (&s->local, key, value);
  if (!strcmp (key, "name"))
    return short_str (&s->name, key, value);
  if (!strcmp (key, "dirty-log-dir"))
    return short_str (&s->dirty_log_dir, key, value);
  if (!strcmp (key, "remote")) {
    char **n = realloc (s->remotes, (s->nremotes + 1) * sizeof *n);
    if (!n) {
      rep_error ("realloc: %m");
      return -1;
    }
    s->remotes = n;
    if (!(s->remotes[s->nremotes] = cfg_xstrdup (value)))
      return -1;
    s->nremotes++;
    return 0;
  }
  return 1;
}

/* Sizes and times.  1 if key is not one of them. */
static int
set_amount_key (struct cfg_short *s, const char *key, const char *value)
{
  if (!strcmp (key, "log-size"))
    return short_size (key, value, &s->log_size, &s->have_log_size);
  if (!strcmp (key, "log-offset")) {
    bool dummy;
    return short_size (key, value, &s->log_offset, &dummy);
  }
  if (!strcmp (key, "size"))
    return short_size (key, value, &s->size, &s->have_size);
  if (!strcmp (key, "region-size"))
    return short_size (key, value, &s->region_size, &s->have_region);
  if (!strcmp (key, "disconnect-timeout")) {
    if (short_time (key, value, &s->disconnect_ms, &s->have_disconnect) == -1)
      return -1;
    if (s->disconnect_ms == 0) {
      rep_error ("disconnect-timeout=%s: must be positive", value);
      return -1;
    }
    return 0;
  }
  if (!strcmp (key, "resync-rate"))
    return short_size (key, value, &s->resync_rate, &s->have_resync_rate);
  if (!strcmp (key, "rate"))
    return short_amount (key, value, units_parse_rate, &s->rate, &s->have_rate);
  if (!strcmp (key, "pull-ahead"))
    return short_time (key, value, &s->pull_ahead_ms, &s->have_pull_ahead);
  if (!strcmp (key, "request-timeout"))
    return short_time (key, value, &s->request_timeout_ms, &s->have_request_timeout);
  if (!strcmp (key, "sync-deadline"))
    return short_time (key, value, &s->sync_deadline_ms, &s->have_sync_deadline);
  if (!strcmp (key, "commit-interval"))
    return short_time (key, value, &s->commit_ms, &s->have_commit);
  return 1;
}

/* label=end|none (every leg), local-label=end|none|PATH (the local leg). */
static int
short_label (struct cfg_short *s, const char *key, const char *value)
{
  const char *why;
  char *path = NULL;
  enum cfg_label kind;

  if (cfg_parse_label (value, &kind, &path, &why) == -1) {
    rep_error ("%s=%s: %s", key, value, why);
    return -1;
  }
  if (!strcmp (key, "label")) {
    if (kind == LABEL_FILE) {
      free (path);
      rep_error ("label=%s: a label file is for the local leg only: use local-label=%s", value, value);
      return -1;
    }
    s->label = kind;
    s->have_label = true;
    return 0;
  }
  free (s->local_label_path);
  s->local_label = kind;
  s->local_label_path = path;
  s->have_local_label = true;
  return 0;
}

/* Choices: policies, modes, switches, the queue depth.  1 if key is not
 * one of them. */
static int
set_choice_key (struct cfg_short *s, const char *key, const char *value)
{
  const char *why;

  if (!strcmp (key, "initial-sync"))
    return short_bool (key, value, &s->initial_sync, &s->have_initial_sync);
  if (!strcmp (key, "policy"))
    return short_policy (key, value, &s->policy, &s->have_policy);
  if (!strcmp (key, "local-policy"))
    return short_policy (key, value, &s->local_policy, &s->have_local_policy);
  if (!strcmp (key, "log-mode")) {
    if (cfg_log_mode_of (value, &s->mode) == -1) {
      rep_error ("log-mode=%s: expected create, open or auto", value);
      return -1;
    }
    s->have_mode = true;
    return 0;
  }
  if (!strcmp (key, "fall-behind")) {
    if (cfg_parse_fall_behind (value, &s->fb, &s->fb_value, &why) == -1) {
      rep_error ("fall-behind=%s: %s", value, why);
      return -1;
    }
    s->have_fb = true;
    return 0;
  }
  if (!strcmp (key, "direct-io"))
    return short_bool (key, value, &s->direct_io, &s->have_direct_io);
  if (!strcmp (key, "label") || !strcmp (key, "local-label"))
    return short_label (s, key, value);
  if (!strcmp (key, "queue-depth")) {
    char *end;
    unsigned long v;
    errno = 0;
    v = strtoul (value, &end, 10);
    if (errno || *end || v < 1 || v > MAX_QUEUE_DEPTH) {
      rep_error ("queue-depth=%s: expected 1..%d", value, MAX_QUEUE_DEPTH);
      return -1;
    }
    s->queue_depth = (unsigned) v;
    return 0;
  }
  return 1;
}

int
cfg_short_set (struct cfg_short *s, const char *key, const char *value)
{
  int r;

  if ((r = set_global_key (s, key, value)) != 1)
    return r;
  s->nkeys++;
  if ((r = set_place_key (s, key, value)) != 1 ||
      (r = set_amount_key (s, key, value)) != 1 ||
      (r = set_choice_key (s, key, value)) != 1)
    return r;
  s->nkeys--;
  return 1;
}

/* Dirty-log path for a leg in the short form: DIR/NAME.SITE.bitmap */
static int
short_dirty_path (const struct cfg_short *s, const char *name, unsigned site, struct cfg_dirty_log *d)
{
  if (!s->dirty_log_dir)
    return 0;
  d->type = DIRTYLOG_DISK;
  if (asprintf (&d->path, "%s/%s.%u.bitmap", s->dirty_log_dir, name, site) == -1) {
    d->path = NULL;
    rep_error ("asprintf: %m");
    return -1;
  }
  return 0;
}

/* control=, on-event= and metrics-listen= go with config= too (they
 * replace the file's values). */
static int
short_overrides (struct cfg *c, const struct cfg_short *s)
{
  struct { const char *v; char **dst; } o[] = {
    { s->control, &c->control.socket }, { s->on_event, &c->on_event },
    { s->metrics_listen, &c->metrics.listen },
  };
  size_t i;

  for (i = 0; i < sizeof o / sizeof o[0]; i++) {
    if (!o[i].v)
      continue;
    free (*o[i].dst);
    if (!(*o[i].dst = cfg_xstrdup (o[i].v)))
      return -1;
  }
  c->takeover = s->takeover;
  c->failback = s->failback;
  if (s->receiver)
    c->receiver = true;
  if (c->receiver && (c->takeover || c->failback)) {
    rep_error ("receiver=yes with %s=yes: a receiver is a DR site's copy; to take over, start "
               "it without receiver", c->takeover ? "takeover" : "failback");
    return -1;
  }
  if (c->takeover && c->failback) {
    rep_error ("takeover=yes and failback=yes: choose one (failback makes this side a copy)");
    return -1;
  }
  if (s->on_event && c->on_event[0] != '/') {
    rep_error ("on-event=%s: must be an absolute path", c->on_event);
    return -1;
  }
  if (s->on_event && access (c->on_event, X_OK) == -1) {
    rep_error ("on-event=%s: cannot be run: %m", c->on_event);
    return -1;
  }
  return 0;
}

/* config= given: the file, with the keys that go with it applied. */
static struct cfg *
finish_from_file (struct cfg_short *s)
{
  struct cfg *c;

  if (s->nkeys) {
    rep_error ("config=%s: the short-form parameters (log=, local=, remote=, ...) "
               "cannot be combined with config=", s->config_file);
    return NULL;
  }
  c = cfg_load_file (s->config_file);
  if (c && short_overrides (c, s) == -1) {
    cfg_free (c);
    return NULL;
  }
  return c;
}

/* Site 0 (local=) and one site per remote=, in order. */
static int
short_sites (struct cfg *c, const struct cfg_short *s)
{
  size_t i;

  c->nsites = 1 + (s->nremotes ? s->nremotes : 0);
  if (!(c->sites = calloc (c->nsites, sizeof *c->sites))) {
    rep_error ("calloc: %m");
    return -1;
  }
  for (i = 0; i < c->nsites; i++) {
    struct cfg_site *st = &c->sites[i];
    cfg_site_defaults (st, (unsigned) i);
    if (s->queue_depth)
      st->queue_depth = s->queue_depth;
    if (i == 0) {
      if (s->have_local_policy)
        st->policy = s->local_policy;
      continue;
    }
    if (s->have_policy)
      st->policy = s->policy;
    if (s->have_fb) {
      st->fall_behind = s->fb;
      st->fall_behind_value = s->fb_value;
    }
    if (s->have_disconnect)
      st->disconnect_timeout_ms = s->disconnect_ms;
    if (s->have_pull_ahead)
      st->pull_ahead_ms = s->pull_ahead_ms;
    if (s->have_request_timeout)
      st->request_timeout_ms = s->request_timeout_ms;
    if (s->have_resync_rate)
      st->resync_rate = s->resync_rate;
    if (s->have_rate)
      st->rate = s->rate;
    if (s->have_sync_deadline)
      st->sync_deadline_ms = s->sync_deadline_ms;
  }
  return 0;
}

/* The one device, with a leg per site. */
static int
short_device (struct cfg *c, const struct cfg_short *s)
{
  struct cfg_device *d;
  size_t i;

  c->ndevices = 1;
  if (!(c->devices = d = calloc (1, sizeof *d))) {
    rep_error ("calloc: %m");
    return -1;
  }
  if (!(d->name = cfg_xstrdup (s->name ? s->name : "default")))
    return -1;
  if (s->have_size)
    d->size = s->size;
  d->nlegs = 1 + s->nremotes;
  if (!(d->legs = calloc (d->nlegs, sizeof *d->legs))) {
    rep_error ("calloc: %m");
    return -1;
  }
  for (i = 0; i < d->nlegs; i++) {
    struct cfg_leg *l = &d->legs[i];
    cfg_dirty_log_defaults (&l->dirty_log);
    l->site = (unsigned) i;
    l->direct_io = s->have_direct_io ? s->direct_io : true;
    if (s->have_region)
      l->dirty_log.region_size = s->region_size;
    if (s->have_initial_sync && i > 0)
      l->dirty_log.sync = s->initial_sync;
    l->label = s->have_label ? s->label : LABEL_END;
    if (i == 0 && s->have_local_label) {
      l->label = s->local_label;
      if (s->local_label_path && !(l->label_path = cfg_xstrdup (s->local_label_path)))
        return -1;
    }
    if (!(l->path = cfg_xstrdup (i == 0 ? s->local : s->remotes[i - 1])))
      return -1;
    if (short_dirty_path (s, d->name, l->site, &l->dirty_log) == -1)
      return -1;
  }
  return 0;
}

struct cfg *
cfg_short_finish (struct cfg_short *s)
{
  struct cfg *c;

  if (s->config_file)
    return finish_from_file (s);
  if (!s->log) {
    rep_error ("missing log=PATH (or config=FILE): the replication log is required");
    return NULL;
  }
  if (!s->local) {
    rep_error ("missing local=PATH (or config=FILE): the local leg is required");
    return NULL;
  }
  if ((s->have_policy || s->have_fb || s->have_rate || s->have_sync_deadline) && s->nremotes == 0)
    rep_warn ("policy=, fall-behind=, rate= and sync-deadline= apply to remote= legs; none given");
  if (s->have_sync_deadline && s->sync_deadline_ms && s->nremotes &&
      (!s->have_policy || s->policy != POLICY_SYNC)) {
    rep_error ("sync-deadline=%" PRIu64 "ms: only meaningful with policy=sync (the remote sites "
               "are %s)", s->sync_deadline_ms, cfg_policy_name (s->have_policy ? s->policy : POLICY_ASYNC));
    return NULL;
  }

  if (!(c = cfg_new ("command line")))
    return NULL;
  if (!(c->replog.path = cfg_xstrdup (s->log)))
    goto err;
  c->replog.offset = s->log_offset;
  if (s->have_log_size)
    c->replog.size = s->log_size;
  if (s->have_mode)
    c->replog.mode = s->mode;
  if (s->have_commit)
    c->replog.commit_interval_ms = s->commit_ms;
  if (short_overrides (c, s) == -1 || short_sites (c, s) == -1 ||
      short_device (c, s) == -1 || cfg_validate (c) == -1)
    goto err;
  return c;
 err:
  cfg_free (c);
  return NULL;
}
