/* replctl: control a running nbd-replicator instance over its control
 * socket.  See replctl(8).  Exit status: 0 success, 1 refused or failed
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
#include "units.h"

static void
usage (FILE *f)
{
  fprintf (f,
           "usage: replctl [--socket PATH | -i INSTANCE] COMMAND\n"
           "commands:\n"
           "  status [--json]     state of the log, sites, devices and legs\n"
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
  return json_object_object_get_ex (o, k, &v) ? json_object_get_string (v) : "";
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
          if (*jstr (l, "last_error"))
            printf (", last error: %s", jstr (l, "last_error"));
          printf ("\n");
        }
    }
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
  char *sock = NULL, *reply;
  bool json = false;
  json_object *doc, *err;
  int c, i;

  while ((c = getopt_long (argc, argv, "+s:i:h", opts, NULL)) != -1) {
    switch (c) {
    case 's':
      free (sock);
      sock = strdup (optarg);
      break;
    case 'i':
      free (sock);
      if (asprintf (&sock, "/run/nbd-replicator/%s.sock", optarg) == -1)
        return 1;
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
  if (strcmp (argv[optind], "status") != 0) {
    fprintf (stderr, "replctl: unknown command '%s'\n", argv[optind]);
    usage (stderr);
    return 2;
  }
  for (i = optind + 1; i < argc; i++) {
    if (!strcmp (argv[i], "--json"))
      json = true;
    else {
      fprintf (stderr, "replctl: status: unknown option '%s'\n", argv[i]);
      return 2;
    }
  }
  if (!sock && !(sock = cfg_default_control_socket ()))
    return 1;
  reply = request (sock, "status");
  free (sock);
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
