/* cfg.h: the configuration of one instance, from a libconfig file or from
 * the nbdkit short form (log=, local=, remote=, ...).  Both produce the
 * same struct cfg, validated by the same code.  Every key has a default,
 * listed in nbd-replicator.conf(5). */
#ifndef REPLICATOR_CFG_H
#define REPLICATOR_CFG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define CFG_MAX_SITES    16     /* site ids 0..15 (header has room for 16) */
#define CFG_MAX_DEVICES  32     /* = RL_MAX_DEVICES: one log header */
#define CFG_NAME_MAX     63     /* device and site names */

enum cfg_log_mode { LOG_MODE_AUTO, LOG_MODE_CREATE, LOG_MODE_OPEN };
enum cfg_policy { POLICY_ASYNC, POLICY_SYNC };
enum cfg_fall_behind { FB_NONE, FB_IOS, FB_SIZE, FB_TIMEOUT };
enum cfg_dirtylog { DIRTYLOG_CORE, DIRTYLOG_NOLOG, DIRTYLOG_DISK };
enum cfg_transport { TRANSPORT_PATH, TRANSPORT_NBD, TRANSPORT_ISCSI };
enum cfg_label { LABEL_END, LABEL_FILE, LABEL_NONE };

struct cfg_site {
  unsigned id;                      /* 0 = local legs, 1..N remote */
  enum cfg_policy policy;           /* default async */
  enum cfg_fall_behind fall_behind; /* default none */
  uint64_t fall_behind_value;       /* entries, bytes or milliseconds */
  uint64_t disconnect_timeout_ms;   /* default 30 s */
  uint64_t pull_ahead_ms;           /* default = disconnect_timeout */
  uint64_t sync_deadline_ms;        /* policy sync only: a client waits for the site
                                       at most this long after its write was
                                       logged, then the site is behind (treated
                                       as async) until it has caught up;
                                       0 = no bound (default) */
  uint64_t resync_rate;             /* bytes/s of resync copies, 0 = unlimited (default) */
  uint64_t rate;                    /* bytes/s sent to the site's connections (log
                                       entries and resync copies, at their wire
                                       cost), 0 = unlimited (default) */
  uint64_t request_timeout_ms;      /* remote request deadline: the connection is
                                       dropped; default 2 x disconnect_timeout */
  unsigned queue_depth;             /* requests in flight per leg, default 32 */
  int line;                         /* source line (0 = implied/short form) */
};

struct cfg_dirty_log {
  enum cfg_dirtylog type;           /* default core */
  char *path;                       /* disk only */
  uint64_t region_size;             /* default 64k */
  bool sync;                        /* default true: copy a new leg */
};

struct cfg_leg {
  unsigned site;
  char *path;                       /* file, block device or URL */
  bool direct_io;                   /* path legs: O_DIRECT (default true) */
  enum cfg_transport transport;
  struct cfg_dirty_log dirty_log;
  /* Where the leg's label lives (safety rule 15): "end" (default: the last
   * MiB or so of the leg, not part of the device), a label file (a path:
   * site 0 path legs only) or "none". */
  enum cfg_label label;
  char *label_path;                 /* LABEL_FILE */
  int line;
};

struct cfg_device {
  char *name;
  uint64_t size;                    /* 0 = the local leg's size */
  struct cfg_leg *legs;
  size_t nlegs;
  int line;
};

/* Longest time accepted anywhere (10 years, ms): times become 64-bit ns. */
#define CFG_MAX_TIME_MS (UINT64_C(10) * 365 * 24 * 3600 * 1000)

struct cfg {
  char *source;                     /* file name, or "command line" */
  struct {
    char *path;
    uint64_t offset;                /* default 0 */
    uint64_t size;                  /* default 1G (create/auto only) */
    enum cfg_log_mode mode;         /* default auto */
    uint64_t commit_interval_ms;    /* background group commit, default 5 ms */
  } replog;
  struct cfg_site *sites;
  size_t nsites;
  struct cfg_device *devices;
  size_t ndevices;
  struct {
    char *socket;                   /* default: see cfg_default_control_socket */
    char *group;                    /* may also connect; default none */
  } control;
  char *on_event;                   /* hook run on state changes; default none */
  struct {
    char *listen;                   /* "HOST:PORT" of the HTTP endpoint; default none */
  } metrics;
  /* takeover=yes (plugin parameter only, never in the file): start as the
   * primary on local legs labelled as another primary's copies (a DR site
   * taking over after a disaster; leg labels, safety rule 15). */
  bool takeover;
  /* failback=yes (plugin parameter only): a one-shot run on the legs of a
   * primary that was failed over: record on its local legs what they hold
   * that the site which took over may lack, label them copies, and exit
   * (leg labels, safety rule 15). */
  bool failback;
  /* receiver = true (file) or receiver=yes: this instance is a DR site's
   * receiver: it serves its devices as a primary's remote legs and keeps
   * each connection's requests in arrival order (one at a time, logged in
   * that order: what it holds is always a prefix of what was sent).  The
   * primary sees it at connect (the export description) and streams to it
   * without a round trip per epoch (worker-remote.c, "stream"). */
  bool receiver;
};

/* The nbdkit short form, collected key by key, then turned into a cfg. */
struct cfg_short;
struct cfg_short *cfg_short_new (void);
void cfg_short_free (struct cfg_short *s);
/* Accept one key=value.  -1 (error reported) for an unknown key or bad
 * value, 1 if the key is not a short-form key (caller decides), 0 ok. */
int cfg_short_set (struct cfg_short *s, const char *key, const char *value);
/* true if config= was given. */
const char *cfg_short_config_file (const struct cfg_short *s);
/* Build and validate the configuration: from the config file if config=
 * was given (then no other key is allowed but control=), else from the
 * short form.  NULL on error (reported). */
struct cfg *cfg_short_finish (struct cfg_short *s);

/* Load and validate a libconfig file.  NULL on error (one message naming
 * file, line and key). */
struct cfg *cfg_load_file (const char *path);
/* Parse from a string (tests).  name is used in messages. */
struct cfg *cfg_load_string (const char *text, const char *name);
void cfg_free (struct cfg *c);

/* Lookups. */
const struct cfg_site *cfg_site (const struct cfg *c, unsigned id);
const struct cfg_leg *cfg_leg (const struct cfg_device *d, unsigned site);

/* Transport of a leg address; -1 for an unknown scheme ("foo://"). */
int cfg_transport_of (const char *addr);
/* Default control socket path (malloc'd). */
char *cfg_default_control_socket (void);
/* "HOST:PORT" with a numeric IPv4 address or an [IPv6] one: 0 and the
 * parts (host may be NULL to only check), or -1. */
int cfg_parse_listen (const char *s, char *host, size_t hostlen, int *port);

/* "end", "none" or PATH (an absolute path) into *kind and *path
 * (malloc'd); 0, or -1 with *why. */
int cfg_parse_label (const char *v, enum cfg_label *kind, char **path, const char **why);

/* Names for printing. */
const char *cfg_policy_name (enum cfg_policy p);
const char *cfg_mode_name (enum cfg_log_mode m);
/* Parse "ios N" / "size N" / "timeout T" / "none"; 0 or -1 with *why. */
void cfg_format_fall_behind (enum cfg_fall_behind kind, uint64_t value, char *buf, size_t len);
int cfg_parse_fall_behind (const char *s, enum cfg_fall_behind *kind,
                           uint64_t *value, const char **why);

#endif
