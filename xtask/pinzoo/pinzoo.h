/* SPDX-License-Identifier: GPL-2.0 OR MIT */
/*
 * pinzoo: the control interface of the pin-bug zoo (shared by the module and
 * by `pintrace zoo`, which mirrors it in Rust).
 */
#ifndef PINZOO_H
#define PINZOO_H

#include <linux/types.h>
#include <linux/ioctl.h>

#define PINZOO_VERSION 4

enum pinzoo_scenario {
	/* pin_user_pages_fast, then unpin_user_pages. */
	PINZOO_BALANCED = 1,
	/* pin, never unpinned (kept; PINZOO_IOC_RELEASE_ALL cleans up). */
	PINZOO_LEAK = 2,
	/* pin released with put_page: FOLL_PIN page released as FOLL_GET. */
	PINZOO_PIN_PUT = 3,
	/* get_user_pages_fast released with unpin_user_page (padded first). */
	PINZOO_GET_UNPIN = 4,
	/* one pin, unpinned twice (padded first). */
	PINZOO_DOUBLE_UNPIN = 5,
	/* pin released by a worker after delay_ms: slow but correct. */
	PINZOO_DELAYED = 6,
	/* pin held (FOLL_LONGTERM with PINZOO_F_LONGTERM) until PINZOO_IOC_RELEASE. */
	PINZOO_HOLD = 7,
	/*
	 * A Direct I/O bio filled from the buffer (bio_iov_iter_get_pages on the
	 * block device bdev_fd), completed with bio_endio, its pages never
	 * released: the end_io forgot bio_release_pages (RELEASE_ALL does it).
	 */
	PINZOO_BIO_LEAK = 8,
	/* The same bio, completed and released with bio_release_pages. */
	PINZOO_BIO_BALANCED = 9,
	/*
	 * Balanced, but a quarter of the pages is unpinned from a softirq (a
	 * pinned soft hrtimer on this CPU) while the task unpins the rest: the
	 * interrupts' unpins land inside the task's, as a bio completion's do.
	 */
	PINZOO_NESTED = 10,
};

#define PINZOO_F_LONGTERM 0x1
/* Acquire with pin_user_pages/get_user_pages (mmap lock held) instead of the _fast calls. */
#define PINZOO_F_SLOW 0x2
/* Acquire with pin_user_pages_unlocked/get_user_pages_unlocked (pages before flags). */
#define PINZOO_F_UNLOCKED 0x4

/* Refcount snapshots of the first page's folio. */
enum pinzoo_stage {
	PINZOO_RC_ACQUIRED = 0, /* after the acquire (and the padding) */
	PINZOO_RC_RELEASED = 1, /* after the scenario's release(s) */
	PINZOO_RC_REPAIRED = 2, /* after undoing the damage (0 when none) */
	PINZOO_RC_STAGES = 3,
};

struct pinzoo_req {
	/* in */
	__u64 addr;
	__u32 nr_pages;
	__u32 scenario;
	__u32 flags;
	__u32 delay_ms;
	/* out */
	__s64 acquired;     /* pages taken by the GUP call */
	__s64 released;     /* release calls made on pages (unpin or put) */
	__u64 handle;       /* for held pins: the argument of PINZOO_IOC_RELEASE */
	__u64 folio;        /* kernel address of the first page's folio */
	__u32 large;        /* 1 when the first page belongs to a large folio */
	__u32 version;      /* PINZOO_VERSION */
	__s64 refcount[PINZOO_RC_STAGES];
	/* in (bio scenarios): an open block device the bio is for */
	__s32 bdev_fd;
	__u32 _pad;
};

/* What PINZOO_IOC_RELEASE and PINZOO_IOC_RELEASE_ALL did. */
struct pinzoo_release {
	__u64 handle;       /* in (RELEASE only) */
	__s64 unpinned;     /* pages unpinned */
	__s64 repaired;     /* pin+put pages restored and unpinned */
	__s64 held;         /* pages still held afterwards */
};

/*
 * Plants: for a while, the kernel's own bio release (__bio_release_pages,
 * which every Direct I/O bio of pinned pages goes through) does it wrong.
 */
enum pinzoo_plant_kind {
	/* Unpins nothing: every pin of the bio leaks (given back at UNPLANT). */
	PINZOO_PLANT_BIO_LEAK = 1,
	/* Drops one reference per page with put_page instead (repaired at UNPLANT). */
	PINZOO_PLANT_BIO_PUT = 2,
};

struct pinzoo_plant {
	/* in (PLANT) */
	__u32 kind;
	__u32 count;        /* bios to plant on, then the plant disarms itself */
	__u32 tgid;         /* only bios released by a task of this process (0: any) */
	__u32 version;      /* out: PINZOO_VERSION */
	/* out (UNPLANT): what the plant did */
	__u64 bios;         /* bios planted on */
	__u64 pages;        /* their pages, kept by the module */
	__u64 skipped;      /* bios let through (no room left, large folios, other tgid) */
	__u64 unpinned;     /* leaked pins given back */
	__u64 repaired;     /* put references restored, then unpinned */
	__u32 planted;      /* a plant was there to remove */
	__u32 armed;        /* it had not disarmed itself yet */
};

#define PINZOO_IOC_RUN _IOWR('Z', 1, struct pinzoo_req)
#define PINZOO_IOC_RELEASE _IOWR('Z', 2, struct pinzoo_release)
#define PINZOO_IOC_RELEASE_ALL _IOWR('Z', 3, struct pinzoo_release)
#define PINZOO_IOC_PLANT _IOWR('Z', 4, struct pinzoo_plant)
#define PINZOO_IOC_UNPLANT _IOWR('Z', 5, struct pinzoo_plant)

#endif
