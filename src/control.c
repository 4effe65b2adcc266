/* control.c: see control.h. */
#include <config.h>

#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <json-c/json.h>

#include "control.h"
#include "io.h"
#include "replicator.h"
#include "report.h"
#include "units.h"

#define LINE_MAX_BYTES 4096
#define CLIENT_TIMEOUT_MS 2000           /* a whole command line, and a whole reply */
#define DRAIN_MS 100                     /* what a client sends after its line */

struct control {
  struct replicator *r;
  char *path;
  int lfd;
  int stop_pipe[2];
  pthread_t thread;
  bool running;                  /* the thread was started */
};

/* Is s valid UTF-8?  (JSON text is UTF-8: a reply must not echo other bytes.) */
static bool
utf8_valid (const unsigned char *s)
{
  while (*s) {
    int n = *s < 0x80 ? 0 : (*s & 0xe0) == 0xc0 ? 1 : (*s & 0xf0) == 0xe0 ? 2 :
            (*s & 0xf8) == 0xf0 ? 3 : -1;
    if (n < 0)
      return false;
    for (s++; n > 0; n--, s++)
      if ((*s & 0xc0) != 0x80)
        return false;
  }
  return true;
}

static char *
error_doc (const char *fmt, const char *arg)
{
  json_object *o = json_object_new_object ();
  char msg[512], safe[256];
  char *s;

  if (!utf8_valid ((const unsigned char *) arg)) {
    size_t i;
    for (i = 0; arg[i] && i < sizeof safe - 1; i++)
      safe[i] = (unsigned char) arg[i] < 0x80 ? arg[i] : '?';
    safe[i] = 0;
    arg = safe;
  }
  snprintf (msg, sizeof msg, fmt, arg);
  json_object_object_add (o, "error", json_object_new_string (msg));
  s = strdup (json_object_to_json_string_ext (o, JSON_C_TO_STRING_PLAIN));
  json_object_put (o);
  return s;
}

static char *
ok_doc (const char *msg)
{
  json_object *o = json_object_new_object ();
  char *s;
  json_object_object_add (o, "ok", json_object_new_boolean (1));
  json_object_object_add (o, "message", json_object_new_string (msg));
  s = strdup (json_object_to_json_string_ext (o, JSON_C_TO_STRING_PLAIN));
  json_object_put (o);
  return s;
}

/* Member k of o as a site id; -1 with a reason when missing or bad. */
static int
get_site (json_object *o, unsigned *site)
{
  json_object *v;
  int64_t n;
  if (!json_object_object_get_ex (o, "site", &v) || !json_object_is_type (v, json_type_int))
    return -1;
  n = json_object_get_int64 (v);
  if (n < 0 || n >= CFG_MAX_SITES)
    return -1;
  *site = (unsigned) n;
  return 0;
}

static const char *
get_str (json_object *o, const char *k)
{
  json_object *v;
  if (!json_object_object_get_ex (o, k, &v) || !json_object_is_type (v, json_type_string))
    return NULL;
  return json_object_get_string (v);
}

/* A flat JSON object (strings, integers, true/false/null values): the
 * control protocol's commands.  Not json_tokener_parse: it creates and
 * frees a C locale on every call, which takes glibc's locale lock for
 * writing each time (a process whose lock was left broken, as the sanitizer
 * runtime's start did: tests/sanitizer-preload.c, blocked there for good).
 * NULL if the line is not such an object. */
static const char *
skip_ws (const char *p)
{
  while (*p == ' ' || *p == '\t' || *p == '\r' || *p == '\n')
    p++;
  return p;
}

static const char *
parse_string (const char *p, char *out, size_t len)
{
  size_t n = 0;
  if (*p++ != '"')
    return NULL;
  while (*p && *p != '"') {
    char c = *p++;
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
      default: return NULL;                /* \u and others: not in commands */
      }
    }
    else if ((unsigned char) c < 0x20)
      return NULL;
    if (n + 1 >= len)
      return NULL;
    out[n++] = c;
  }
  if (*p != '"')
    return NULL;
  out[n] = 0;
  return p + 1;
}

static json_object *
flat_json_parse (const char *line)
{
  json_object *o = json_object_new_object ();
  const char *p = skip_ws (line);
  char key[64], val[1024];

  if (*p++ != '{')
    goto bad;
  p = skip_ws (p);
  if (*p == '}')
    goto end;
  for (;;) {
    json_object *v;
    if (!(p = parse_string (skip_ws (p), key, sizeof key)))
      goto bad;
    p = skip_ws (p);
    if (*p++ != ':')
      goto bad;
    p = skip_ws (p);
    if (*p == '"') {
      if (!(p = parse_string (p, val, sizeof val)))
        goto bad;
      v = json_object_new_string (val);
    }
    else if (!strncmp (p, "true", 4) || !strncmp (p, "false", 5)) {
      v = json_object_new_boolean (*p == 't');
      p += *p == 't' ? 4 : 5;
    }
    else if (!strncmp (p, "null", 4)) {
      v = NULL;
      p += 4;
    }
    else if (*p == '-' || (*p >= '0' && *p <= '9')) {
      char *e;
      long long n;
      errno = 0;
      n = strtoll (p, &e, 10);
      if (errno || e == p || *e == '.' || *e == 'e' || *e == 'E')
        goto bad;
      v = json_object_new_int64 (n);
      p = e;
    }
    else
      goto bad;
    json_object_object_add (o, key, v);
    p = skip_ws (p);
    if (*p == ',') {
      p++;
      continue;
    }
    if (*p == '}')
      break;
    goto bad;
  }
 end:
  if (*skip_ws (p + 1))
    goto bad;                              /* trailing garbage */
  return o;
 bad:
  json_object_put (o);
  return NULL;
}

/* A command as a JSON object: {"cmd": "resync", "device": "db", "site": 1, "full": false}. */
/* The metrics command's reply: the text in a JSON document. */
static char *
control_metrics_doc (struct replicator *r)
{
  char *text = replicator_metrics (r), *reply;
  json_object *o;

  if (!text)
    return error_doc ("out of memory%s", "");
  o = json_object_new_object ();
  json_object_object_add (o, "ok", json_object_new_boolean (1));
  json_object_object_add (o, "metrics", json_object_new_string (text));
  free (text);
  reply = strdup (json_object_to_json_string_ext (o, JSON_C_TO_STRING_PLAIN));
  json_object_put (o);
  return reply;
}

/* An administrator's command (the request o is checked but for its
 * command's own keys): 0 with what was done in msg, or -1 with why. */
static int
control_admin (struct replicator *r, json_object *o, const char *cmd, const char *dev,
               unsigned site, char *why, size_t wlen, char *msg, size_t mlen)
{
  json_object *v;
  int rc;

  if (!strcmp (cmd, "resync")) {
    bool full = json_object_object_get_ex (o, "full", &v) && json_object_get_boolean (v);
    rc = replicator_resync (r, dev, site, full, why, wlen);
    snprintf (msg, mlen, "%s resync of device '%s' at site %u started", full ? "full" : "a",
              dev, site);
  }
  else if (!strcmp (cmd, "restore")) {
    rc = replicator_restore (r, dev, site, why, wlen);
    snprintf (msg, mlen, "restore of the local leg of device '%s' from site %u started",
              dev, site);
  }
  else if (!strcmp (cmd, "verify")) {
    bool mark = json_object_object_get_ex (o, "mark", &v) && json_object_get_boolean (v);
    rc = replicator_verify (r, dev, site, mark, why, wlen);
    snprintf (msg, mlen, "verify of device '%s' at site %u started", dev, site);
  }
  else if (!strcmp (cmd, "policy")) {
    const char *pol = get_str (o, "policy");
    if (!pol) {
      snprintf (why, wlen, "bad request: policy needs a \"policy\" (sync or async)");
      return -1;
    }
    rc = replicator_set_policy (r, site, pol, get_str (o, "fall_behind"), why, wlen);
    snprintf (msg, mlen, "site %u: policy %s", site, pol);
  }
  else if (!strcmp (cmd, "discard")) {
    rc = replicator_discard (r, site, why, wlen);
    snprintf (msg, mlen, "site %u: its legs in split brain lose their changes and become "
              "copies of this primary at their next connection", site);
  }
  else {
    bool pause = !strcmp (cmd, "pause");
    rc = replicator_pause (r, site, pause, why, wlen);
    snprintf (msg, mlen, "site %u %s", site, pause ? "paused" : "resumed");
  }
  return rc;
}

/* The switchover command ({"cmd": "switchover", "timeout": SECONDS}): it
 * runs on the control thread (the socket answers nothing else meanwhile,
 * at most the timeout).  The reply has the seq and, per site, what it
 * holds and how many legs were labelled. */
static char *
control_switchover (struct replicator *r, json_object *o)
{
  struct switchover_result res;
  json_object *v, *doc, *sites;
  int64_t t = 60;
  char why[768], *reply;
  unsigned i;

  if (json_object_object_get_ex (o, "timeout", &v)) {
    t = json_object_is_type (v, json_type_int) ? json_object_get_int64 (v) : -1;
    if (t < 1 || t > 86400)
      return error_doc ("bad request: \"timeout\" must be 1..86400 seconds%s", "");
  }
  why[0] = 0;
  if (replicator_switchover (r, (unsigned) t, &res, why, sizeof why) == -1)
    return error_doc ("switchover: %s", why);
  doc = json_object_new_object ();
  sites = json_object_new_array ();
  json_object_object_add (doc, "ok", json_object_new_boolean (1));
  json_object_object_add (doc, "message", json_object_new_string ("switchover done: this instance "
                          "is read-only (writes fail with EROFS)"));
  json_object_object_add (doc, "seq", json_object_new_int64 ((int64_t) res.seq));
  for (i = 0; i < CFG_MAX_SITES; i++) {
    json_object *e;
    if (!res.sites[i].configured)
      continue;
    e = json_object_new_object ();
    json_object_object_add (e, "id", json_object_new_int ((int) i));
    json_object_object_add (e, "applied_seq", json_object_new_int64 ((int64_t) res.sites[i].applied));
    json_object_object_add (e, "legs_labelled", json_object_new_int ((int) res.sites[i].legs));
    json_object_array_add (sites, e);
  }
  json_object_object_add (doc, "sites", sites);
  reply = strdup (json_object_to_json_string_ext (doc, JSON_C_TO_STRING_PLAIN));
  json_object_put (doc);
  return reply;
}

static char *
handle_json (struct replicator *r, const char *line)
{
  json_object *o = flat_json_parse (line);
  const char *cmd, *dev;
  char why[256], msg[320];
  unsigned site = 0;
  char *reply;
  int rc;

  if (!o || !json_object_is_type (o, json_type_object)) {
    if (o)
      json_object_put (o);
    return error_doc ("bad request: not a JSON object%s", "");
  }
  if (!(cmd = get_str (o, "cmd"))) {
    json_object_put (o);
    return error_doc ("bad request: no \"cmd\"%s", "");
  }
  if (!strcmp (cmd, "status")) {
    json_object_put (o);
    return replicator_status_json (r, false);
  }
  if (!strcmp (cmd, "metrics")) {
    json_object_put (o);
    return control_metrics_doc (r);
  }
  if (!strcmp (cmd, "switchover")) {
    reply = control_switchover (r, o);
    json_object_put (o);
    return reply;
  }
  if (strcmp (cmd, "resync") && strcmp (cmd, "pause") && strcmp (cmd, "resume") &&
      strcmp (cmd, "policy") && strcmp (cmd, "verify") && strcmp (cmd, "restore") &&
      strcmp (cmd, "discard")) {
    reply = error_doc ("unknown command '%s'", cmd);
    json_object_put (o);
    return reply;
  }
  if (get_site (o, &site) == -1) {
    json_object_put (o);
    return error_doc ("bad request: \"site\" must be a site number (0..%s)", "15");
  }
  why[0] = 0;
  dev = get_str (o, "device");
  if (!dev && (!strcmp (cmd, "resync") || !strcmp (cmd, "restore") || !strcmp (cmd, "verify"))) {
    reply = error_doc ("bad request: %s needs a \"device\"", cmd);
    json_object_put (o);
    return reply;
  }
  rc = control_admin (r, o, cmd, dev, site, why, sizeof why, msg, sizeof msg);
  json_object_put (o);
  return rc == 0 ? ok_doc (msg) : error_doc ("%s", why);
}

char *
control_handle (struct replicator *r, const char *line)
{
  char cmd[64];
  size_t n = strcspn (line, " \t\r\n");

  if (line[0] == '{')
    return handle_json (r, line);
  if (n == 0)
    return error_doc ("empty command%s", "");
  if (n >= sizeof cmd)
    return error_doc ("unknown command (%s)", "too long");
  memcpy (cmd, line, n);
  cmd[n] = 0;
  if (!strcmp (cmd, "status"))
    return replicator_status_json (r, false);
  return error_doc ("unknown command '%s'", cmd);
}

/* Read one line within CLIENT_TIMEOUT_MS in all; -1 on timeout, error or
 * overlong line. */
static int
read_line (int fd, char *buf, size_t len)
{
  size_t got = 0;
  uint64_t deadline = mono_ns () / 1000000u + CLIENT_TIMEOUT_MS;

  while (got < len - 1) {
    ssize_t r;
    if (!io_wait_until (fd, POLLIN, deadline, -1))
      return -1;
    r = read (fd, buf + got, len - 1 - got);
    if (r <= 0)
      break;
    got += (size_t) r;
    if (memchr (buf, '\n', got))
      break;
  }
  buf[got] = 0;
  if (got == len - 1 && !memchr (buf, '\n', got))
    return -1;
  return 0;
}

static void
serve_one (struct control *c, int fd)
{
  char line[LINE_MAX_BYTES + 1];
  char *reply;
  size_t len, off = 0;
  uint64_t deadline;

  if (read_line (fd, line, sizeof line) == -1)
    reply = error_doc ("bad request: no complete command line within %s", "2 s or 4096 bytes");
  else {
    rep_debugc (REP_DBG_CONTROL, "control: %.200s", line);
    reply = control_handle (c->r, line);
  }
  if (!reply)
    return;
  len = strlen (reply);
  deadline = mono_ns () / 1000000u + CLIENT_TIMEOUT_MS;
  while (off < len) {
    ssize_t w;
    if (!io_wait_until (fd, POLLOUT, deadline, -1))
      break;                              /* a client that never reads */
    w = send (fd, reply + off, len - off, MSG_NOSIGNAL | MSG_DONTWAIT);
    if (w <= 0 && errno != EAGAIN)
      break;
    if (w > 0)
      off += (size_t) w;
  }
  if (off == len)
    (void) !send (fd, "\n", 1, MSG_NOSIGNAL | MSG_DONTWAIT);
  free (reply);
  /* Closing with unread input would reset the connection and could lose
   * the reply (an overlong line): end our side, then take what the client
   * still sends, briefly. */
  shutdown (fd, SHUT_WR);
  deadline = mono_ns () / 1000000u + DRAIN_MS;
  for (off = 0; off < 65536; ) {
    ssize_t r;
    if (!io_wait_until (fd, POLLIN, deadline, -1) || (r = read (fd, line, sizeof line)) <= 0)
      break;
    off += (size_t) r;
  }
}

static void *
control_thread (void *arg)
{
  struct control *c = arg;

  for (;;) {
    int fd = io_accept_next (c->lfd, c->stop_pipe[0]);
    if (fd == -1)
      break;
    serve_one (c, fd);
    close (fd);
  }
  return NULL;
}

static int
mkdir_parent (const char *path)
{
  char *d = strdup (path), *p;
  if (!d)
    return -1;
  p = strrchr (d, '/');
  if (p && p != d) {
    *p = 0;
    for (p = d + 1; *p; p++)
      if (*p == '/') {
        *p = 0;
        mkdir (d, 0755);
        *p = '/';
      }
    mkdir (d, 0755);
  }
  free (d);
  return 0;
}

struct control *
control_open (struct replicator *r, const char *path, const char *group)
{
  struct control *c = calloc (1, sizeof *c);
  struct sockaddr_un sa = { .sun_family = AF_UNIX };
  mode_t old;
  int e;

  if (!c)
    return NULL;
  c->r = r;
  c->lfd = -1;
  c->stop_pipe[0] = c->stop_pipe[1] = -1;
  if (strlen (path) >= sizeof sa.sun_path) {
    rep_error ("control socket path %s is too long (max %zu bytes)", path, sizeof sa.sun_path - 1);
    goto err;
  }
  strcpy (sa.sun_path, path);
  mkdir_parent (path);
  if (!(c->path = strdup (path)) || pipe2 (c->stop_pipe, O_CLOEXEC) == -1)
    goto err;
  c->lfd = socket (AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (c->lfd == -1)
    goto err;
  /* A stale socket from a dead instance is replaced; a live one refused. */
  if (connect (c->lfd, (struct sockaddr *) &sa, sizeof sa) == 0) {
    rep_error ("control socket %s: another instance is listening there", path);
    goto err;
  }
  unlink (path);
  old = umask (group ? 0117 : 0177);
  e = bind (c->lfd, (struct sockaddr *) &sa, sizeof sa);
  umask (old);
  if (e == -1) {
    rep_error ("control socket %s: bind: %m", path);
    goto err;
  }
  if (group) {
    struct group *g = getgrnam (group);
    if (!g || chown (path, (uid_t) -1, g->gr_gid) == -1)
      rep_warn ("control socket %s: cannot give group '%s' access", path, group);
  }
  if (listen (c->lfd, 16) == -1)
    goto err;
  return c;
 err:
  if (errno)
    rep_error ("control socket %s: %m", path);
  if (c->lfd >= 0)
    close (c->lfd);
  if (c->stop_pipe[0] >= 0) {
    close (c->stop_pipe[0]);
    close (c->stop_pipe[1]);
  }
  free (c->path);
  free (c);
  return NULL;
}

int
control_run (struct control *c)
{
  int e = pthread_create (&c->thread, NULL, control_thread, c);
  if (e) {
    errno = e;
    rep_error ("control socket %s: cannot start its thread: %m", c->path);
    return -1;
  }
  c->running = true;
  return 0;
}

void
control_stop (struct control *c)
{
  if (!c)
    return;
  (void) !write (c->stop_pipe[1], "x", 1);
  if (c->running)
    pthread_join (c->thread, NULL);
  close (c->lfd);
  close (c->stop_pipe[0]);
  close (c->stop_pipe[1]);
  unlink (c->path);
  free (c->path);
  free (c);
}
