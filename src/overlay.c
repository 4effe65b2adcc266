/* overlay.c: the index of unapplied log entries by byte range (see
 * overlay.h for the contract).
 *
 * Owns: one device's set of non-overlapping extents and its node pool.
 * Invariants: extents never overlap; an insert never lets an older seq
 * cover a newer one's bytes; count is the number of nodes in the tree.
 * Not thread-safe: the caller holds the device's overlay lock.
 * May call: nothing but the C library.
 *
 * A treap (binary search tree by start, heap by random priority) with
 * split and merge.  Extents never overlap, so ordering by start also
 * orders by end.  Nodes come from a free list so the write path does not
 * call malloc once the pool has grown to its working size.
 */
#include <config.h>

#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "overlay.h"

struct node {
  struct ov_piece p;
  uint32_t prio;
  struct node *l, *r;
};

struct overlay {
  struct node *root;
  struct node *free;             /* free list, linked through r */
  uint64_t count;
  uint32_t rng;
};

struct overlay *
overlay_new (void)
{
  struct overlay *ov = calloc (1, sizeof *ov);
  if (ov)
    ov->rng = 0x9e3779b9u;
  return ov;
}

static void
free_tree (struct node *n)
{
  while (n) {
    struct node *r = n->r;
    free_tree (n->l);
    free (n);
    n = r;
  }
}

void
overlay_free (struct overlay *ov)
{
  if (!ov)
    return;
  free_tree (ov->root);
  while (ov->free) {
    struct node *n = ov->free;
    ov->free = n->r;
    free (n);
  }
  free (ov);
}

uint64_t
overlay_count (const struct overlay *ov)
{
  return ov->count;
}

static uint32_t
next_prio (struct overlay *ov)
{
  uint32_t x = ov->rng;           /* xorshift32 */
  x ^= x << 13;
  x ^= x >> 17;
  x ^= x << 5;
  return ov->rng = x;
}

static struct node *
node_new (struct overlay *ov, const struct ov_piece *p)
{
  struct node *n = ov->free;
  if (n)
    ov->free = n->r;
  else if (!(n = malloc (sizeof *n)))
    return NULL;
  n->p = *p;
  n->prio = next_prio (ov);
  n->l = n->r = NULL;
  ov->count++;
  return n;
}

/* At least k nodes on the free list (node_new then cannot fail). */
static int
reserve (struct overlay *ov, size_t k)
{
  struct node *n;
  size_t have = 0;

  for (n = ov->free; n && have < k; n = n->r)
    have++;
  for (; have < k; have++) {
    if (!(n = malloc (sizeof *n)))
      return -1;
    n->r = ov->free;
    ov->free = n;
  }
  return 0;
}

static void
node_put (struct overlay *ov, struct node *n)
{
  n->r = ov->free;
  ov->free = n;
  ov->count--;
}

/* Split t into nodes with start < key (*a) and start >= key (*b). */
static void
split (struct node *t, uint64_t key, struct node **a, struct node **b)
{
  if (!t) {
    *a = *b = NULL;
    return;
  }
  if (t->p.start < key) {
    split (t->r, key, &t->r, b);
    *a = t;
  }
  else {
    split (t->l, key, a, &t->l);
    *b = t;
  }
}

/* Merge a and b where every start in a < every start in b. */
static struct node *
merge (struct node *a, struct node *b)
{
  if (!a)
    return b;
  if (!b)
    return a;
  if (a->prio > b->prio) {
    a->r = merge (a->r, b);
    return a;
  }
  b->l = merge (a, b->l);
  return b;
}

static struct node *
rightmost (struct node *t)
{
  while (t && t->r)
    t = t->r;
  return t;
}

/* In-order list of a subtree into a growable array. */
struct nlist {
  struct node **v;
  size_t n, cap;
};

static int
collect (struct node *t, struct nlist *l)
{
  while (t) {
    if (collect (t->l, l) == -1)
      return -1;
    if (l->n == l->cap) {
      size_t cap = l->cap ? l->cap * 2 : 16;
      struct node **v = realloc (l->v, cap * sizeof *v);
      if (!v)
        return -1;
      l->v = v;
      l->cap = cap;
    }
    l->v[l->n++] = t;
    t = t->r;
  }
  return 0;
}

static struct node *
append (struct node *t, struct node *n)
{
  n->l = n->r = NULL;
  return merge (t, n);
}

/* Insert node n (its range overlaps nothing) at its place by key and
 * priority. */
static struct node *
insert_node (struct node *t, struct node *n)
{
  if (!t)
    return n;
  if (n->prio > t->prio) {
    split (t, n->p.start, &n->l, &n->r);
    return n;
  }
  if (n->p.start < t->p.start)
    t->l = insert_node (t->l, n);
  else
    t->r = insert_node (t->r, n);
  return t;
}

/* Does [start, end) overlap any extent?  One descent: the extent with the
 * largest start below `end` is the only one that can. */
static bool
overlaps_any (const struct node *t, uint64_t start, uint64_t end)
{
  const struct node *floor = NULL;
  while (t) {
    if (t->p.start < end) {
      floor = t;
      t = t->r;
    }
    else
      t = t->l;
  }
  return floor && floor->p.end > start;
}

int
overlay_insert (struct overlay *ov, uint64_t start, uint64_t end, uint64_t seq,
                enum ov_kind kind, const uint8_t *src)
{
  struct node *A, *B, *M, *R, *out = NULL, *tail = NULL, *left;
  struct nlist l = { 0 };
  struct ov_piece np = { .seq = seq, .kind = kind, .src = src, .eoff = start };
  uint64_t cursor = start;
  size_t i;

  if (start >= end)
    return 0;
  /* Fast path: nothing there yet (most random writes). */
  if (!overlaps_any (ov->root, start, end)) {
    struct node *nn;
    np.start = start;
    np.end = end;
    if (!(nn = node_new (ov, &np))) {
      errno = ENOMEM;
      return -1;
    }
    ov->root = insert_node (ov->root, nn);
    return 0;
  }
  split (ov->root, start, &A, &B);
  split (B, end, &M, &R);
  /* Every node this may need (a tail, a gap before each extent in the
   * range and one after), before anything changes: out of memory leaves
   * the tree as it was. */
  if (collect (M, &l) == -1 || reserve (ov, l.n + 2) == -1)
    goto nomem;

  /* The extent starting before `start` may reach into the range. */
  left = rightmost (A);
  if (left && left->p.end > start) {
    if (left->p.seq > seq)
      cursor = left->p.end;                  /* newer data stays */
    else {
      if (left->p.end > end) {               /* older extent sticks out on the right */
        struct ov_piece t = left->p;
        t.start = end;
        tail = node_new (ov, &t);          /* reserved: cannot fail */
      }
      left->p.end = start;
    }
  }
  for (i = 0; i < l.n; i++) {
    struct node *n = l.v[i];
    if (n->p.seq > seq) {
      if (cursor < n->p.start) {
        struct node *nn;
        np.start = cursor;
        np.end = n->p.start;
        nn = node_new (ov, &np);             /* reserved */
        out = append (out, nn);
      }
      if (n->p.end > cursor)
        cursor = n->p.end;
      out = append (out, n);
    }
    else if (n->p.end > end) {               /* older, sticks out on the right */
      n->p.start = end;
      tail = n;
    }
    else
      node_put (ov, n);
  }
  if (cursor < end) {
    struct node *nn;
    np.start = cursor;
    np.end = end;
    nn = node_new (ov, &np);                 /* reserved */
    out = append (out, nn);
  }
  if (tail)
    out = append (out, tail);
  free (l.v);
  ov->root = merge (merge (A, out), R);
  return 0;

 nomem:
  /* Nothing changed yet: the tree whole (the new entry is not indexed). */
  free (l.v);
  ov->root = merge (merge (A, M), R);
  errno = ENOMEM;
  return -1;
}

void
overlay_remove (struct overlay *ov, uint64_t start, uint64_t end, uint64_t seq)
{
  struct node *A, *B, *M, *R, *out = NULL;
  struct nlist l = { 0 };
  size_t i;

  if (start >= end)
    return;
  /* Fast path: the entry is still one whole extent. */
  {
    struct node **slot = &ov->root;
    while (*slot && (*slot)->p.start != start)
      slot = start < (*slot)->p.start ? &(*slot)->l : &(*slot)->r;
    if (*slot && (*slot)->p.seq == seq && (*slot)->p.end == end) {
      struct node *n = *slot;
      *slot = merge (n->l, n->r);
      node_put (ov, n);
      return;
    }
  }
  split (ov->root, start, &A, &B);
  split (B, end, &M, &R);
  if (collect (M, &l) == -1) {
    /* Out of memory: walk without a list (rare path). */
    ov->root = merge (merge (A, M), R);
    return;
  }
  for (i = 0; i < l.n; i++) {
    if (l.v[i]->p.seq == seq)
      node_put (ov, l.v[i]);
    else
      out = append (out, l.v[i]);
  }
  free (l.v);
  ov->root = merge (merge (A, out), R);
}

static void
visit (struct node *n, uint64_t start, uint64_t end,
       void (*fn) (const struct ov_piece *, void *), void *opaque)
{
  while (n) {
    if (n->p.end > start)
      visit (n->l, start, end, fn, opaque);
    if (n->p.start >= end)
      return;
    if (n->p.end > start)
      fn (&n->p, opaque);
    n = n->r;
  }
}

void
overlay_foreach (struct overlay *ov, uint64_t start, uint64_t end,
                 void (*fn) (const struct ov_piece *p, void *opaque), void *opaque)
{
  visit (ov->root, start, end, fn, opaque);
}
