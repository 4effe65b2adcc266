/* report.h: errors, warnings and debug messages of the core library.
 *
 * The core library never prints or exits by itself.  It reports through
 * these functions; the nbdkit plugin routes them to nbdkit_error and
 * nbdkit_debug, everything else (replctl, unit tests) to stderr.
 */
#ifndef REPLICATOR_REPORT_H
#define REPLICATOR_REPORT_H

#include <stdarg.h>

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

#endif
