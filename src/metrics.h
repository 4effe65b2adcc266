/* metrics.h: OpenMetrics text and its HTTP endpoint (metrics.c), and the
 * client request latency histograms it publishes. */
#ifndef REPLICATOR_METRICS_H
#define REPLICATOR_METRICS_H

#include <stdbool.h>
#include <stdint.h>

struct replicator;
struct vdev;

/* Client operations timed for metrics. */
enum lat_op { LAT_READ, LAT_WRITE, LAT_ZERO, LAT_TRIM, LAT_FLUSH, LAT_OPS };
#define LAT_BUCKETS 16

/* Metrics in the OpenMetrics text format (malloc'd, ends with "# EOF"). */
char *replicator_metrics (struct replicator *r);
/* The HTTP endpoint of metrics.listen: bind before the fork (errors reach
 * the operator), serve from a thread after it. */
int metrics_http_open (struct replicator *r, const char *listen);
int metrics_http_start (void);
void metrics_http_stop (void);

/* Client request latency for metrics: one histogram per device and
 * operation (nanoseconds; ok = the request succeeded). */
void rdev_observe (struct vdev *d, enum lat_op op, uint64_t ns, bool ok);
const char *lat_op_name (enum lat_op op);
extern const double lat_bounds[LAT_BUCKETS];

#endif
