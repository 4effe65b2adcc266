/* replog-format.h: on-disk structures of the replication log.
 *
 * The format is described in prose at the top of replog.c and in
 * nbd-replicator-replog(5).  Every size and offset here is pinned by a
 * _Static_assert: any change that trips one is a backward compatibility
 * problem and needs a new RL_VERSION.
 *
 * All integers are little-endian.  We only build on little-endian hosts
 * (asserted below), so the structs are used directly.
 */
#ifndef REPLICATOR_REPLOG_FORMAT_H
#define REPLICATOR_REPLOG_FORMAT_H

#include <stddef.h>
#include <stdint.h>

#include "label.h"           /* struct lbl_gen */

_Static_assert (__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__,
                "the replog format is little-endian and we use it in place");

#define RL_MAGIC          "NBDRPLOG"     /* 8 bytes, no NUL stored */
#define RL_VERSION        1
#define RL_HEADER_SIZE    4096           /* one header copy */
#define RL_BLOCK          4096           /* data ring unit and alignment */
#define RL_DESC_SIZE      64
#define RL_DESC_MAGIC     0x31454c52u    /* "RLE1" */
#define RL_MAX_SITES      16
#define RL_MAX_DEVICES    32
#define RL_NAME_LEN       64
#define RL_MIN_LOG_SIZE   (1u << 20)     /* 1 MiB */

/* Per-site record in the header. */
struct rl_site_rec {
  uint64_t applied;      /* every entry with seq <= applied is durable there */
  uint8_t  present;      /* 1 = the site is configured */
  uint8_t  mode;         /* RL_MODE_LOG or RL_MODE_DIRTY */
  uint8_t  flags;        /* RL_SITE_* (0 in logs written before it existed) */
  uint8_t  pad[5];
};
_Static_assert (sizeof (struct rl_site_rec) == 16, "rl_site_rec is 16 bytes");

#define RL_MODE_LOG    0
#define RL_MODE_DIRTY  1

/* Site flags. */
#define RL_SITE_IN_DOUBT 1     /* a connection was aborted with writes in flight
                                  that the remote may still apply: the site is not
                                  a consistent prefix until those regions are
                                  copied again (resync) */
#define RL_SITE_RESYNC   2     /* the site returned to log mode at applied + 1 with
                                  regions still to copy (its dirty logs): not
                                  consistent until that resync has finished */
#define RL_SITE_DLOG_LOST 4    /* a dirty-log file of the site could not be written:
                                  its bitmaps on disk may lack regions whose entries
                                  left the log; a restart marks every region of the
                                  site's legs (never set with mode log and neither
                                  flag above: a consistent prefix lacks nothing) */

/* Per-device identity in the header (safety rule 7). */
struct rl_dev_rec {
  char     name[RL_NAME_LEN];  /* NUL-padded */
  uint64_t size;               /* bytes */
  uint32_t block_size;         /* advertised minimum block size */
  uint32_t present;            /* 1 = slot in use */
  uint8_t  flags;              /* RL_DEV_* (0 in logs written before it existed) */
  uint8_t  pad[15];
};

/* Device flags. */
#define RL_DEV_LOCAL_OUT 1     /* the device's local leg is out of service (it failed,
                                  or is being restored): it does not hold the
                                  device's data; reads go through a remote leg */
#define RL_DEV_LABELLED  2     /* the device's local leg was labelled with this log's
                                  identity (leg labels): a blank one now is another disk */
_Static_assert (sizeof (struct rl_dev_rec) == 96, "rl_dev_rec is 96 bytes");

/* A generation that ended: struct lbl_gen (label.h), the same 24 bytes in the
 * log header and in a leg label. */
#define RL_HIST 4

/* One header copy: copy A at offset 0, copy B at offset 4096. */
struct rl_header {
  char     magic[8];           /*   0 "NBDRPLOG" */
  uint32_t version;            /*   8 RL_VERSION */
  uint32_t header_size;        /*  12 RL_HEADER_SIZE */
  uint64_t generation;         /*  16 +1 per write; copy = generation & 1 */
  uint64_t salt;               /*  24 random at create, seeds entry checksums */
  uint64_t log_size;           /*  32 bytes from the first header copy to the end */
  uint32_t block_size;         /*  40 RL_BLOCK */
  uint32_t desc_size;          /*  44 RL_DESC_SIZE */
  uint64_t desc_offset;        /*  48 descriptor ring, from the first header */
  uint64_t ndesc;              /*  56 descriptor slots (multiple of 64) */
  uint64_t data_offset;        /*  64 data ring, from the first header */
  uint64_t data_blocks;        /*  72 RL_BLOCK-sized blocks in the data ring */
  uint64_t created;            /*  80 unix time of creation */
  uint32_t nsites;             /*  88 informational: sites present */
  uint32_t ndevices;           /*  92 informational: devices present */
  uint64_t clean;              /*  96 1 = closed after a full drain to site 0 */
  uint8_t  group[16];          /* 104 group UUID (leg labels; zero in logs before them) */
  uint64_t gen;                /* 120 the group's current generation (leg labels) */
  struct rl_site_rec sites[RL_MAX_SITES];     /* 128 */
  struct rl_dev_rec devices[RL_MAX_DEVICES];  /* 384 */
  uint8_t  dev_uuid[RL_MAX_DEVICES][16];      /* 3456 device UUIDs, by slot */
  uint32_t nhist;              /* 3968 generations in hist */
  uint32_t pad1;               /* 3972 zero */
  struct lbl_gen hist[RL_HIST]; /* 3976 the generations before gen, newest first */
  uint8_t  reserved2[4092 - 3976 - 24 * RL_HIST]; /* 4072 zero */
  uint32_t crc;                /* 4092 crc32c of bytes 0..4091 */
};
_Static_assert (sizeof (struct rl_header) == RL_HEADER_SIZE, "header is 4096 bytes");
_Static_assert (offsetof (struct rl_header, generation) == 16, "generation at 16");
_Static_assert (offsetof (struct rl_header, salt) == 24, "salt at 24");
_Static_assert (offsetof (struct rl_header, ndesc) == 56, "ndesc at 56");
_Static_assert (offsetof (struct rl_header, sites) == 128, "sites at 128");
_Static_assert (offsetof (struct rl_header, devices) == 384, "devices at 384");
_Static_assert (offsetof (struct rl_header, group) == 104, "group at 104");
_Static_assert (offsetof (struct rl_header, dev_uuid) == 3456, "dev_uuid at 3456");
_Static_assert (offsetof (struct rl_header, hist) == 3976, "hist at 3976");
_Static_assert (offsetof (struct rl_header, crc) == 4092, "crc at 4092");

/* Entry operations. */
#define RL_OP_WRITE    1         /* payload follows in the data ring */
#define RL_OP_ZERO     2         /* write zeroes, no payload */
#define RL_OP_TRIM     3         /* trim: applied so that it reads back zeroes */
#define RL_OP_BARRIER  4         /* end of an epoch (flush or FUA) */

#define RL_FLAG_FUA       1      /* the barrier came from a FUA write */
#define RL_FLAG_MAY_TRIM  2      /* zero that may unmap */

/* One entry descriptor, in slot (seq % ndesc) of the descriptor ring. */
struct rl_desc {
  uint32_t magic;              /*  0 RL_DESC_MAGIC */
  uint8_t  op;                 /*  4 RL_OP_* */
  uint8_t  flags;              /*  5 RL_FLAG_* */
  uint16_t device;             /*  6 index into header devices[] */
  uint64_t seq;                /*  8 sequence number, 1, 2, 3, ... */
  uint64_t offset;             /* 16 byte offset in the device */
  uint32_t length;             /* 24 bytes affected */
  uint32_t nblocks;            /* 28 data blocks holding the payload (writes) */
  uint64_t data_pos;           /* 32 logical block position; ring block = data_pos % data_blocks */
  uint64_t epoch;              /* 40 global epoch of this entry */
  uint64_t time_ns;            /* 48 CLOCK_REALTIME when logged */
  uint32_t reserved;           /* 56 zero */
  uint32_t crc;                /* 60 crc32c(salt, desc[0..59], payload[0..length)) */
};
_Static_assert (sizeof (struct rl_desc) == RL_DESC_SIZE, "descriptor is 64 bytes");
_Static_assert (offsetof (struct rl_desc, seq) == 8, "seq at 8");
_Static_assert (offsetof (struct rl_desc, data_pos) == 32, "data_pos at 32");
_Static_assert (offsetof (struct rl_desc, crc) == 60, "crc at 60");

#endif
