/* Unit test: CRC-32C known answers, incremental use, and the table
 * implementation against the SSE4.2 one (re-exec with the table forced). */
#include <config.h>
#undef NDEBUG
#include <assert.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "crc32c.h"

int
main (int argc, char **argv)
{
  static unsigned char buf[100000];
  unsigned i, sum = 0;
  uint32_t whole, part;

  assert (crc32c (0, "123456789", 9) == 0xE3069283u);
  assert (crc32c (0, "", 0) == 0);
  memset (buf, 0, 32);
  assert (crc32c (0, buf, 32) == 0x8A9136AAu);       /* RFC 3720 B.4 */
  memset (buf, 0xff, 32);
  assert (crc32c (0, buf, 32) == 0x62A8AB43u);
  srand (42);
  for (i = 0; i < sizeof buf; i++)
    buf[i] = (unsigned char) rand ();
  whole = crc32c (0, buf, sizeof buf);
  for (i = 1; i < 200; i++) {                          /* any split, any alignment */
    part = crc32c (crc32c (0, buf, i * 7), buf + i * 7, sizeof buf - i * 7);
    assert (part == whole);
  }
  for (i = 0; i < 64; i++)
    sum += crc32c (0, buf + i, 1000 + i);
  printf ("crc32c %s: whole=%08x sum=%08x\n", getenv ("REPLICATOR_CRC32C_TABLE") ? "table" : "default",
          whole, sum);
  if (argc == 1) {
    /* Same figures from the table implementation. */
    char cmd[4096];
    snprintf (cmd, sizeof cmd, "REPLICATOR_CRC32C_TABLE=1 '%s' %08x %08x", argv[0], whole, sum);
    return system (cmd) == 0 ? 0 : 1;
  }
  if (argc == 3) {
    char w[16], s[16];
    snprintf (w, sizeof w, "%08x", whole);
    snprintf (s, sizeof s, "%08x", sum);
    if (strcmp (w, argv[1]) || strcmp (s, argv[2])) {
      fprintf (stderr, "table implementation differs\n");
      return 1;
    }
  }
  return 0;
}
