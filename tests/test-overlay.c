/* Unit test: the read overlay against a byte-level model.  Random inserts
 * arrive in random sequence order (newest seq must win), random removes of
 * applied entries; after every step the overlay's coverage of random ranges
 * must match the model exactly, and extents must not overlap. */
#include <config.h>
#undef NDEBUG
#include <assert.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "overlay.h"

#define DEV 65536
#define NENT 4000

struct ent { uint64_t s, e, seq; int kind; bool in, removed; };
static struct ent ents[NENT + 1];
static uint64_t model[DEV];          /* seq covering each byte, 0 = none */

/* Out of memory on demand: the test is linked with --wrap=malloc and
 * --wrap=realloc; the fail_in'th allocation from now fails (0 = the next
 * one), -1 = none. */
static int fail_in = -1;
void *__real_malloc (size_t n);
void *__real_realloc (void *p, size_t n);
void *__wrap_malloc (size_t n);
void *__wrap_realloc (void *p, size_t n);

static bool
fail_now (void)
{
  if (fail_in < 0)
    return false;
  return fail_in-- == 0;
}

void *
__wrap_malloc (size_t n)
{
  return fail_now () ? NULL : __real_malloc (n);
}

void *
__wrap_realloc (void *p, size_t n)
{
  return fail_now () ? NULL : __real_realloc (p, n);
}

static void
rebuild_model (void)
{
  unsigned i;
  uint64_t b;
  memset (model, 0, sizeof model);
  for (i = 1; i <= NENT; i++)
    if (ents[i].in && !ents[i].removed)
      for (b = ents[i].s; b < ents[i].e; b++)
        if (ents[i].seq > model[b])
          model[b] = ents[i].seq;
}

struct chk { uint64_t s, e, cursor; int bad; };
static void
check_piece (const struct ov_piece *p, void *o)
{
  struct chk *c = o;
  uint64_t b, s = p->start > c->s ? p->start : c->s, e = p->end < c->e ? p->end : c->e;
  if (p->start < c->cursor && c->cursor != c->s)
    c->bad = 1;                               /* overlap or disorder */
  for (b = c->cursor; b < s; b++)
    if (model[b])
      c->bad = 2;                             /* gap where the model has data */
  for (b = s; b < e; b++)
    if (model[b] != p->seq)
      c->bad = 3;
  if (p->kind == OV_DATA && p->src != (const uint8_t *) (uintptr_t) (p->seq << 20) )
    c->bad = 4;
  if (p->kind == OV_DATA && p->eoff != ents[p->seq].s)
    c->bad = 5;
  c->cursor = e;
}

static void
verify (struct overlay *ov, uint64_t s, uint64_t e)
{
  struct chk c = { s, e, s, 0 };
  uint64_t b;
  overlay_foreach (ov, s, e, check_piece, &c);
  for (b = c.cursor; b < e; b++)
    if (model[b])
      c.bad = 6;
  if (c.bad) {
    fprintf (stderr, "mismatch %d in [%" PRIu64 ", %" PRIu64 ")\n", c.bad, s, e);
    exit (1);
  }
}

/* An insert over many extents that runs out of memory at each allocation
 * in turn leaves the overlay as it was (no entry half-indexed, no node
 * used after it was freed); once the allocations succeed it is indexed. */
static void
oom_inserts (void)
{
  struct overlay *ov = overlay_new ();
  unsigned i, k, fails = 0;

  memset (ents, 0, sizeof ents);
  /* 200 extents under the big insert (seq 300): the first 20 newer (each
   * needs a new gap node before it, from malloc), then newer and older
   * alternating (older nodes freed); ents[] is indexed by seq
   * (check_piece). */
  for (i = 1; i <= 200; i++) {
    uint64_t seq = i <= 20 || i % 2 == 0 ? 300 + i : i, st = (uint64_t) i * 300;
    ents[seq] = (struct ent) { st, st + 200, seq, OV_DATA, true, false };
    assert (overlay_insert (ov, st, st + 200, seq, OV_DATA, (const uint8_t *) (uintptr_t) (seq << 20)) == 0);
  }
  ents[300] = (struct ent) { 150, 50000, 300, OV_DATA, false, false };
  for (k = 0; ; k++) {
    int r;
    fail_in = (int) k;
    r = overlay_insert (ov, ents[300].s, ents[300].e, 300, OV_DATA, (const uint8_t *) (uintptr_t) (300ull << 20));
    fail_in = -1;
    if (r == 0)
      break;
    fails++;
    rebuild_model ();
    verify (ov, 0, DEV);                     /* as before the insert */
  }
  ents[300].in = true;
  rebuild_model ();
  verify (ov, 0, DEV);
  overlay_free (ov);
  assert (fails >= 1);
  printf ("overlay: an insert failing at each of its %u allocations left the overlay whole\n", fails);
  memset (ents, 0, sizeof ents);
}

int
main (void)
{
  struct overlay *ov = overlay_new ();
  unsigned order[NENT], i, step, checks = 0, next_remove = 1;

  srand (7);
  for (i = 1; i <= NENT; i++) {
    uint64_t s = (uint64_t) rand () % DEV, len = 1 + (uint64_t) rand () % (rand () % 8 ? 512 : 8192);
    ents[i] = (struct ent) { s, s + len > DEV ? DEV : s + len, i, rand () % 5 ? OV_DATA : OV_ZERO, false, false };
    order[i - 1] = i;
  }
  /* Insert in a shuffled order within windows of 16 (like racing writers). */
  for (i = 0; i < NENT; i++) {
    unsigned j = i + (unsigned) rand () % (NENT - i < 16 ? NENT - i : 16), t = order[i];
    order[i] = order[j];
    order[j] = t;
  }
  for (step = 0; step < NENT; step++) {
    struct ent *e = &ents[order[step]];
    assert (overlay_insert (ov, e->s, e->e, e->seq, e->kind,
                            e->kind == OV_DATA ? (const uint8_t *) (uintptr_t) (e->seq << 20) : NULL) == 0);
    e->in = true;
    /* Apply (remove) the oldest entry now and then, as the worker does:
     * in log order, and only once it and everything before it is in. */
    if (rand () % 3 == 0 && next_remove <= NENT && ents[next_remove].in) {
      struct ent *r = &ents[next_remove++];
      overlay_remove (ov, r->s, r->e, r->seq);
      r->removed = true;
    }
    if (step % 50 == 0 || step == NENT - 1) {
      rebuild_model ();
      verify (ov, 0, DEV);
      for (i = 0; i < 20; i++) {
        uint64_t rs = (uint64_t) rand () % DEV, re = rs + 1 + (uint64_t) rand () % 4096;
        verify (ov, rs, re > DEV ? DEV : re);
        checks++;
      }
    }
  }
  /* Remove everything: empty. */
  for (i = 1; i <= NENT; i++)
    if (!ents[i].removed) {
      overlay_remove (ov, ents[i].s, ents[i].e, ents[i].seq);
      ents[i].removed = true;
    }
  assert (overlay_count (ov) == 0);
  rebuild_model ();
  verify (ov, 0, DEV);
  overlay_free (ov);
  printf ("overlay: %d entries, %u range checks against the model\n", NENT, checks);
  oom_inserts ();
  return 0;
}
