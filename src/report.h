/* report.h: errors, warnings and debug messages of the core library.
 *
 * The core library never prints or exits by itself.  It reports through
 * these functions; the nbdkit plugin routes them to nbdkit_error and
 * nbdkit_debug, everything else (replctl, unit tests) to stderr.
 */
#ifndef REPLICATOR_REPORT_H
#define REPLICATOR_REPORT_H

#include <stdarg.h>
#include <stddef.h>

/* Where messages go.  Any pointer may be NULL: stderr is used then. */
struct report_sink {
  void (*error) (const char *fmt, va_list ap);
  void (*debug) (const char *fmt, va_list ap);
  void (*info) (const char *fmt, va_list ap);   /* operator-visible notes */
};

/* Install a sink (copied); NULL restores stderr. */
void report_set_sink (const struct report_sink *sink);
/* Enable or disable debug messages for the stderr sink. */
void report_set_verbose (int verbose);

/* One line, no trailing newline needed.  %m is supported (errno kept). */
void rep_error (const char *fmt, ...) __attribute__ ((format (printf, 1, 2)));
/* A warning: an error-level message that does not fail anything. */
void rep_warn (const char *fmt, ...) __attribute__ ((format (printf, 1, 2)));
void rep_info (const char *fmt, ...) __attribute__ ((format (printf, 1, 2)));
void rep_debug (const char *fmt, ...) __attribute__ ((format (printf, 1, 2)));
/* One line into a caller's buffer (the err, errlen of the format
 * modules); nothing when buf is NULL or len 0. */
void rep_fmt (char *buf, size_t len, const char *fmt, ...) __attribute__ ((format (printf, 3, 4)));

/* Debug categories (nbdkit -D replicator.NAME=1, see the plugin's man
 * page): rep_debugc costs one test when its category is off. */
enum {
  REP_DBG_WORKER = 1,     /* replicator.worker: epochs, checkpoints, rewinds */
  REP_DBG_LINK = 2,       /* replicator.link: connections, timeouts */
  REP_DBG_LOG = 4,        /* replicator.log: sync rounds, header writes, space */
  REP_DBG_RESYNC = 8,     /* replicator.resync: region copies */
  REP_DBG_CONTROL = 16,   /* replicator.control: control and metrics requests */
  REP_DBG_EVENT = 32,     /* replicator.event: hook runs */
  REP_DBG_ALL = 63,
};
extern unsigned rep_debug_mask;
void report_set_debug_mask (unsigned mask);
#define rep_debugc(cat, ...) \
  do { if (__builtin_expect ((rep_debug_mask & (cat)) != 0, 0)) rep_debug (__VA_ARGS__); } while (0)

#endif
