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
#include <unistd.h>

#include <json-c/json.h>

#include "control.h"
#include "replicator.h"
#include "report.h"

#define LINE_MAX_BYTES 4096
#define CLIENT_TIMEOUT_MS 2000

struct control {
  struct replicator *r;
  char *path;
  int lfd;
  int stop_pipe[2];
  pthread_t thread;
  bool running;                  /* the thread was started */
};

static char *
error_doc (const char *fmt, const char *arg)
{
  json_object *o = json_object_new_object ();
  char msg[512];
  char *s;

  snprintf (msg, sizeof msg, fmt, arg);
  json_object_object_add (o, "error", json_object_new_string (msg));
  s = strdup (json_object_to_json_string_ext (o, JSON_C_TO_STRING_PLAIN));
  json_object_put (o);
  return s;
}

char *
control_handle (struct replicator *r, const char *line)
{
  char cmd[64];
  size_t n = strcspn (line, " \t\r\n");

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

/* Read one line with a deadline; -1 on timeout, error or overlong line. */
static int
read_line (int fd, char *buf, size_t len)
{
  size_t got = 0;

  while (got < len - 1) {
    struct pollfd p = { .fd = fd, .events = POLLIN };
    ssize_t r;
    if (poll (&p, 1, CLIENT_TIMEOUT_MS) <= 0)
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

  if (read_line (fd, line, sizeof line) == -1)
    reply = error_doc ("bad request: no complete command line within %s", "2 s or 4096 bytes");
  else
    reply = control_handle (c->r, line);
  if (!reply)
    return;
  len = strlen (reply);
  while (off < len) {
    struct pollfd p = { .fd = fd, .events = POLLOUT };
    ssize_t w;
    if (poll (&p, 1, CLIENT_TIMEOUT_MS) <= 0)
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
}

static void *
control_thread (void *arg)
{
  struct control *c = arg;

  for (;;) {
    struct pollfd p[2] = { { .fd = c->lfd, .events = POLLIN }, { .fd = c->stop_pipe[0], .events = POLLIN } };
    int fd;
    if (poll (p, 2, -1) == -1) {
      if (errno == EINTR)
        continue;
      break;
    }
    if (p[1].revents)
      break;
    fd = accept4 (c->lfd, NULL, NULL, SOCK_CLOEXEC);
    if (fd == -1)
      continue;
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
