/*
 * The shared file format (format version 2): registry shards and object
 * files. doc/FORMAT.md explains every field, who writes it and when; this
 * header and that document change together, and any change that an older
 * reader would misread bumps WH_FORMAT_VERSION.
 *
 * Shared memory holds plain integers only. Every field that another process
 * may write is read once into a local, validated, then used.
 */
#ifndef WH_FORMAT_H
#define WH_FORMAT_H

#include <stdatomic.h>
#include <stdint.h>

#define WH_FORMAT_VERSION 2u

#define WH_OBJ_MAGIC "WAITHDL1" /* 8 bytes, no terminator stored */
#define WH_REG_MAGIC "WAITREG1"

/* Registry: WH_SHARDS files of WH_SHARD_SLOTS process slots each. */
#define WH_SHARD_SLOTS 64u
#define WH_SHARDS 16u
#define WH_MAX_SLOTS (WH_SHARD_SLOTS * WH_SHARDS)
#define WH_REG_PREFIX ".registry-" /* + two decimal digits; '.' keeps it out of every safe name */

/* Byte offsets used only for OFD locks; they lie beyond every file's data. */
#define WH_LK_INIT (1LL << 30)       /* exclusive while a file is being initialised */
#define WH_LK_INUSE (WH_LK_INIT + 1) /* object files: shared by every process that has it open */
#define WH_LK_SLOT0 (WH_LK_INIT + 64) /* registry: slot i is locked at WH_LK_SLOT0 + i */

/*
 * A process identity is (slot, generation) packed as gen << 16 | (slot + 1).
 * 0 means "nobody". Bit 63 is never part of an identity: the guard word uses
 * it as its "sleepers" flag, so generations are below 2^47.
 */
#define WH_IDENT_SLOT(id) ((uint32_t)((id) & 0xffffu) - 1u)
#define WH_IDENT_GEN(id) (((id) >> 16) & ((UINT64_C(1) << 47) - 1))
#define WH_IDENT(slot, gen) (((uint64_t)(gen) << 16) | (uint64_t)((slot) + 1u))
#define WH_GEN_MAX ((UINT64_C(1) << 47) - 1)
#define WH_GUARD_SLEEPERS (UINT64_C(1) << 63)

struct wh_reg_header { /* 64 bytes */
    char magic[8];
    uint32_t version;
    uint32_t header_size; /* sizeof(struct wh_reg_header) */
    uint32_t shard;       /* index of this shard */
    uint32_t nslots;      /* WH_SHARD_SLOTS */
    uint32_t slot_size;   /* sizeof(struct wh_reg_slot) */
    _Atomic uint32_t hint; /* advisory: a slot index likely to be free */
    uint8_t reserved[32];
};

struct wh_reg_slot { /* 64 bytes; written only by the process holding the slot's lock */
    _Atomic uint64_t gen; /* bumped by each new owner after it takes the slot's lock */
    _Atomic uint32_t pid; /* diagnostics only (info().holders) */
    uint32_t reserved0;
    uint8_t reserved[48];
};

#define WH_REG_FILE_SIZE (sizeof(struct wh_reg_header) + WH_SHARD_SLOTS * sizeof(struct wh_reg_slot))

enum wh_kind { WH_KIND_LOCK = 1, WH_KIND_SEMAPHORE = 2, WH_KIND_RWLOCK = 3, WH_KIND_EVENT = 4 };
#define WH_TOKEN_MAX ((UINT64_C(1) << 53) - 1) /* exact in a Lua number (a double) */
/* An event's max_count: its reset mode. WH_EVENT_INITIAL, only in what an opener asks for:
 * a file it makes starts set. */
#define WH_EVENT_MANUAL 1u
#define WH_EVENT_AUTO 2u
#define WH_EVENT_INITIAL 0x100u

/* What a hold or a wait entry is for. */
enum wh_mode {
    WH_MODE_LOCK = 1,        /* lock: the lock; semaphore: one ticket */
    WH_MODE_READ = 2,        /* rwlock */
    WH_MODE_WRITE = 3,       /* rwlock */
    WH_MODE_UPGRADEABLE = 4, /* rwlock: upgradeable read */
    WH_MODE_UPGRADE = 5      /* rwlock: the upgradeable holder waiting for the write lock */
};
#define WH_WAIT_FUTEX 0x100u  /* wait entry flag: the waiter sleeps on seq (counted in nfutex) */
#define WH_WAIT_MODE_MASK 0xffu

/* Bounded barging: a waiter older than this has priority over newcomers. */
#define WH_BARGE_NS (10LL * 1000 * 1000)

#define WH_WAIT_ENTRIES 128u

struct wh_obj_header { /* 256 bytes */
    /* Immutable after initialisation (written once by the creator). */
    char magic[8];
    uint32_t version;
    uint32_t header_size; /* sizeof(struct wh_obj_header) */
    uint32_t kind;        /* enum wh_kind */
    uint32_t max_count;   /* semaphore: tickets; lock, rwlock: 1 */
    uint32_t nslots;      /* slot entries: WH_MAX_SLOTS for semaphore and rwlock, 0 for lock */
    uint32_t nwait;       /* wait entries: WH_WAIT_ENTRIES */
    uint32_t slot_off;    /* offset of the slot table */
    uint32_t wait_off;    /* offset of the wait table */
    uint64_t file_size;   /* bytes the file must have */
    uint8_t reserved0[16];

    /* Offset 64: synchronisation. */
    _Atomic uint64_t guard;         /* identity of the guard's owner | WH_GUARD_SLEEPERS */
    _Atomic uint32_t seq;           /* futex word: bumped by every change that may admit a waiter */
    _Atomic uint32_t nfutex;        /* derived: wait entries with WH_WAIT_FUTEX */
    _Atomic uint32_t nwaiting;      /* derived: wait entries in use */
    _Atomic uint32_t nwriters;      /* derived: wait entries for WRITE or UPGRADE */
    _Atomic int64_t last_reclaim;   /* CLOCK_MONOTONIC ns of the latest reclamation scan */
    _Atomic uint32_t next_tag;      /* source of wait entry tags */
    uint32_t reserved1;
    uint8_t reserved2[24];

    /* Offset 128: the state. */
    _Atomic uint64_t owner;       /* lock: holder; rwlock: writer (an upgraded holder too) */
    _Atomic uint64_t upgradeable; /* rwlock: holder of the upgradeable read */
    _Atomic uint32_t total;       /* derived: semaphore tickets / rwlock readers = sum of slot counts */
    uint32_t reserved3;
    _Atomic uint64_t token;       /* the latest fencing token handed out (below 2^53) */
    _Atomic uint64_t ev_gen;      /* event: how many times it was set */
    _Atomic uint32_t ev_set;      /* event: 1 while set */
    uint32_t reserved5;
    uint8_t reserved4[80];
};

struct wh_slot_entry { /* 16 bytes; entry i belongs to registry slot i */
    _Atomic uint64_t ident; /* the identity that the count belongs to */
    _Atomic uint32_t count; /* semaphore: tickets held; rwlock: plain reads held */
    uint32_t reserved;
};

struct wh_wait_entry { /* 32 bytes */
    _Atomic uint64_t ident; /* 0 = free; written last when claimed, first when freed */
    _Atomic int64_t since;  /* CLOCK_MONOTONIC ns when this wait began */
    _Atomic int64_t lease;  /* CLOCK_MONOTONIC ns after which the entry is ignored */
    _Atomic uint32_t mode;  /* enum wh_mode | WH_WAIT_FUTEX */
    _Atomic uint32_t tag;   /* lets the owner recognise its own entry */
};

_Static_assert(sizeof(struct wh_reg_header) == 64, "registry header layout");
_Static_assert(sizeof(struct wh_reg_slot) == 64, "registry slot layout");
_Static_assert(sizeof(struct wh_obj_header) == 256, "object header layout");
_Static_assert(sizeof(struct wh_slot_entry) == 16, "slot entry layout");
_Static_assert(sizeof(struct wh_wait_entry) == 32, "wait entry layout");

#endif
