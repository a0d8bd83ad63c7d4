// SPDX-License-Identifier: GPL-2.0
/*
 * pinzoo: plants page-pin bugs on demand, deterministically, so that a pin
 * auditor can be shown catching each kind on the real kernel.
 *
 * /dev/pinzoo takes a user buffer and runs one scenario on its pages
 * (PINZOO_IOC_RUN), returning what it did and the refcount of the first
 * page's folio at each stage. The harmful scenarios are made survivable:
 * references are added first where the mistake would underflow a refcount,
 * and the damage of a pin released with put_page is undone by
 * PINZOO_IOC_RELEASE_ALL (or when the module is removed).
 *
 * PINZOO_IOC_PLANT makes the kernel's own Direct I/O bio release wrong for a
 * number of bios (PINZOO_IOC_UNPLANT, or the module's removal, ends it and
 * gives back what it kept), so that whole real I/O paths can be audited.
 *
 * For test kernels only.
 */
#include <linux/bio.h>
#include <linux/blkdev.h>
#include <linux/delay.h>
#include <linux/file.h>
#include <linux/completion.h>
#include <linux/hrtimer.h>
#include <linux/fs.h>
#include <linux/kprobes.h>
#include <linux/list.h>
#include <linux/miscdevice.h>
#include <linux/mm.h>
#include <linux/module.h>
#include <linux/mutex.h>
#include <linux/slab.h>
#include <linux/uaccess.h>
#include <linux/uio.h>
#include <linux/version.h>
#include <linux/workqueue.h>

#include "pinzoo.h"

#define PINZOO_MAX_PAGES 4096

/* The vmas argument of (pin|get)_user_pages went away in 6.5. */
#if LINUX_VERSION_CODE < KERNEL_VERSION(6, 5, 0)
#define PINZOO_VMAS , NULL
#else
#define PINZOO_VMAS
#endif
/* Small folios: each pin adds this to the refcount (mm/gup.c). */
#define PINZOO_PIN_BIAS 1024

enum held_kind {
	HELD_PINNED,   /* released by unpin_user_pages */
	HELD_PIN_PUT,  /* pinned then put_page'd (large folios: kept by a module ref) */
	HELD_BIO,      /* a completed bio whose pages were never released */
};

struct held {
	struct list_head node;
	u64 handle;
	enum held_kind kind;
	unsigned long nr;
	struct page **pages;
	struct bio *bio; /* HELD_BIO only */
	struct delayed_work work; /* PINZOO_DELAYED only */
	bool delayed;
	bool done; /* the delayed release ran */
};

static LIST_HEAD(held_list);
static DEFINE_MUTEX(held_lock);
static u64 next_handle = 1;

static s64 rc_of(struct page *page)
{
	return folio_ref_count(page_folio(page));
}

/* Undoes one holding's pins (or the damage of a pin released with put_page). */
static void held_undo(struct held *h, struct pinzoo_release *out)
{
	unsigned long i;

	if (h->kind == HELD_BIO) {
		bio_release_pages(h->bio, false);
		bio_put(h->bio);
		h->bio = NULL;
		out->unpinned += h->nr;
		return;
	}
	if (h->kind == HELD_PIN_PUT) {
		/*
		 * Give back the reference put_page dropped (on a large folio, the
		 * module's own stands in for it), then unpin properly.
		 */
		for (i = 0; i < h->nr; i++) {
			if (!PageCompound(h->pages[i]))
				get_page(h->pages[i]);
			unpin_user_page(h->pages[i]);
		}
		out->repaired += h->nr;
	} else {
		unpin_user_pages(h->pages, h->nr);
		out->unpinned += h->nr;
	}
}

static void held_free(struct held *h)
{
	kvfree(h->pages);
	kfree(h);
}

/*
 * A slow but correct release, from a worker. The holding stays on the list
 * (marked done) so that its memory outlives any cancel; RELEASE_ALL or the
 * module's exit frees it.
 */
static void delayed_release(struct work_struct *work)
{
	struct held *h = container_of(to_delayed_work(work), struct held, work);
	struct pinzoo_release ignored = {};

	held_undo(h, &ignored);
	mutex_lock(&held_lock);
	h->done = true;
	mutex_unlock(&held_lock);
}

static u64 keep(struct page **pages, unsigned long nr, enum held_kind kind,
		unsigned int delay_ms)
{
	struct held *h = kzalloc(sizeof(*h), GFP_KERNEL);
	u64 handle;

	if (!h)
		return 0;
	h->kind = kind;
	h->nr = nr;
	h->pages = pages;
	mutex_lock(&held_lock);
	handle = h->handle = next_handle++;
	list_add_tail(&h->node, &held_list);
	if (delay_ms) {
		h->delayed = true;
		INIT_DELAYED_WORK(&h->work, delayed_release);
		schedule_delayed_work(&h->work, msecs_to_jiffies(delay_ms));
	}
	mutex_unlock(&held_lock);
	return handle;
}

/* The planted bug of PINZOO_BIO_LEAK: completion without bio_release_pages. */
static void pinzoo_bio_end_io(struct bio *bio)
{
}

/*
 * Fills a bio from the user buffer the way Direct I/O does, completes it
 * without submitting it (the device is only its target), then releases its
 * pages or (PINZOO_BIO_LEAK) keeps them.
 */
static long run_bio(struct pinzoo_req *req)
{
	size_t len = (size_t)req->nr_pages << PAGE_SHIFT;
	struct iovec iov = { .iov_base = (void __user *)(unsigned long)req->addr,
			     .iov_len = len };
	struct block_device *bdev;
	struct iov_iter iter;
	struct held *h;
	struct file *f;
	struct bio *bio;
	int ret;

	if (req->nr_pages > BIO_MAX_VECS)
		return -E2BIG;
	f = fget(req->bdev_fd);
	if (!f)
		return -EBADF;
	if (!S_ISBLK(file_inode(f)->i_mode)) {
		fput(f);
		return -ENOTBLK;
	}
	bdev = I_BDEV(f->f_mapping->host);
	bio = bio_alloc(bdev, req->nr_pages, REQ_OP_READ, GFP_KERNEL);
	if (!bio) {
		fput(f);
		return -ENOMEM;
	}
	bio->bi_end_io = pinzoo_bio_end_io;
	iov_iter_init(&iter, ITER_DEST, &iov, 1, len);
	ret = bio_iov_iter_get_pages(bio, &iter);
	fput(f);
	if (ret) {
		bio_put(bio);
		return ret;
	}
	req->acquired = bio->bi_vcnt;
	req->version = PINZOO_VERSION;
	req->folio = (u64)(unsigned long)page_folio(bio->bi_io_vec[0].bv_page);
	req->large = folio_test_large(page_folio(bio->bi_io_vec[0].bv_page));
	req->refcount[PINZOO_RC_ACQUIRED] = rc_of(bio->bi_io_vec[0].bv_page);
	bio_endio(bio);
	if (req->scenario == PINZOO_BIO_BALANCED) {
		struct page *first = bio->bi_io_vec[0].bv_page;

		get_page(first);
		bio_release_pages(bio, false);
		req->released = req->acquired;
		req->refcount[PINZOO_RC_RELEASED] = rc_of(first);
		put_page(first);
		bio_put(bio);
		return 0;
	}
	h = kzalloc(sizeof(*h), GFP_KERNEL);
	if (!h) {
		bio_release_pages(bio, false);
		bio_put(bio);
		return -ENOMEM;
	}
	h->kind = HELD_BIO;
	h->nr = bio->bi_vcnt;
	h->bio = bio;
	mutex_lock(&held_lock);
	req->handle = h->handle = next_handle++;
	list_add_tail(&h->node, &held_list);
	mutex_unlock(&held_lock);
	return 0;
}

/* PINZOO_NESTED: the softirq's share of the pages and its pace. */
#define NESTED_PERIOD_NS 5000

struct nested {
	struct hrtimer timer;
	struct page **pages;
	unsigned long next, end;
	struct completion done;
};

static enum hrtimer_restart nested_fire(struct hrtimer *t)
{
	struct nested *n = container_of(t, struct nested, timer);

	if (n->next < n->end)
		unpin_user_page(n->pages[n->next++]);
	if (n->next < n->end) {
		hrtimer_forward_now(t, ns_to_ktime(NESTED_PERIOD_NS));
		return HRTIMER_RESTART;
	}
	complete(&n->done);
	return HRTIMER_NORESTART;
}

/* Unpins pages[0, split) in the task, pages[split, nr) in a softirq. */
static long run_nested(struct page **pages, unsigned long nr)
{
	struct nested *n = kzalloc(sizeof(*n), GFP_KERNEL);
	unsigned long i, split = nr - nr / 4;
	ktime_t deadline;

	if (!n)
		return -ENOMEM;
	n->pages = pages;
	n->next = split;
	n->end = nr;
	init_completion(&n->done);
#if LINUX_VERSION_CODE >= KERNEL_VERSION(6, 13, 0)
	hrtimer_setup(&n->timer, nested_fire, CLOCK_MONOTONIC, HRTIMER_MODE_REL_PINNED_SOFT);
#else
	hrtimer_init(&n->timer, CLOCK_MONOTONIC, HRTIMER_MODE_REL_PINNED_SOFT);
	n->timer.function = nested_fire;
#endif
	/* The timer is pinned to this CPU; so is the task while it unpins. */
	preempt_disable();
	hrtimer_start(&n->timer, ns_to_ktime(NESTED_PERIOD_NS), HRTIMER_MODE_REL_PINNED_SOFT);
	/*
	 * Start with the timer's first unpin, so that the task's run under its
	 * later ones; bounded, as a softirq left to ksoftirqd cannot run here.
	 */
	deadline = ktime_add_ms(ktime_get(), 10);
	while (READ_ONCE(n->next) == split && !completion_done(&n->done) &&
	       ktime_before(ktime_get(), deadline))
		cpu_relax();
	for (i = 0; i < split; i++)
		unpin_user_page(pages[i]);
	preempt_enable();
	wait_for_completion(&n->done);
	/* The callback may still be returning from complete(). */
	hrtimer_cancel(&n->timer);
	kfree(n);
	return 0;
}

static long run(struct pinzoo_req *req)
{
	unsigned int flags = FOLL_WRITE;
	unsigned long i, nr = req->nr_pages;
	struct page **pages;
	bool kept = false;
	long got;

	if (!nr || nr > PINZOO_MAX_PAGES || req->addr & ~PAGE_MASK)
		return -EINVAL;
	if (req->flags & ~(PINZOO_F_LONGTERM | PINZOO_F_SLOW | PINZOO_F_UNLOCKED))
		return -EINVAL;
	if ((req->flags & PINZOO_F_SLOW) && (req->flags & PINZOO_F_UNLOCKED))
		return -EINVAL;
	if (req->scenario == PINZOO_BIO_LEAK || req->scenario == PINZOO_BIO_BALANCED)
		return run_bio(req);
	if (req->flags & PINZOO_F_LONGTERM)
		flags |= FOLL_LONGTERM;
	pages = kvcalloc(nr, sizeof(*pages), GFP_KERNEL);
	if (!pages)
		return -ENOMEM;

	if (req->flags & PINZOO_F_SLOW) {
		mmap_read_lock(current->mm);
		if (req->scenario == PINZOO_GET_UNPIN)
			got = get_user_pages(req->addr, nr, flags, pages PINZOO_VMAS);
		else
			got = pin_user_pages(req->addr, nr, flags, pages PINZOO_VMAS);
		mmap_read_unlock(current->mm);
	} else if (req->flags & PINZOO_F_UNLOCKED) {
		if (req->scenario == PINZOO_GET_UNPIN)
			got = get_user_pages_unlocked(req->addr, nr, pages, flags);
		else
			got = pin_user_pages_unlocked(req->addr, nr, pages, flags);
	} else if (req->scenario == PINZOO_GET_UNPIN) {
		got = get_user_pages_fast(req->addr, nr, flags, pages);
	} else {
		got = pin_user_pages_fast(req->addr, nr, flags, pages);
	}
	if (got < 0) {
		kvfree(pages);
		return got;
	}
	req->acquired = got;
	req->version = PINZOO_VERSION;
	if (got == 0)
		goto out_free;
	req->folio = (u64)(unsigned long)page_folio(pages[0]);
	req->large = folio_test_large(page_folio(pages[0]));

	switch (req->scenario) {
	case PINZOO_BALANCED:
		req->refcount[PINZOO_RC_ACQUIRED] = rc_of(pages[0]);
		unpin_user_pages(pages, got);
		req->released = got;
		req->refcount[PINZOO_RC_RELEASED] = rc_of(pages[0]);
		break;
	case PINZOO_NESTED:
		req->refcount[PINZOO_RC_ACQUIRED] = rc_of(pages[0]);
		if (run_nested(pages, got)) {
			unpin_user_pages(pages, got);
			kvfree(pages);
			return -ENOMEM;
		}
		req->released = got;
		req->refcount[PINZOO_RC_RELEASED] = rc_of(pages[0]);
		break;
	case PINZOO_LEAK:
	case PINZOO_HOLD:
		req->refcount[PINZOO_RC_ACQUIRED] = rc_of(pages[0]);
		req->handle = keep(pages, got, HELD_PINNED, 0);
		kept = true;
		break;
	case PINZOO_DELAYED:
		req->refcount[PINZOO_RC_ACQUIRED] = rc_of(pages[0]);
		req->handle = keep(pages, got, HELD_PINNED,
				   req->delay_ms ? req->delay_ms : 1);
		kept = true;
		break;
	case PINZOO_PIN_PUT:
		/*
		 * A large folio would be freed with a nonzero pin count once the
		 * buffer is unmapped ("Bad page state"): a reference of the
		 * module's own keeps it. A small page keeps the 1023 the pin left.
		 */
		for (i = 0; i < got; i++)
			if (PageCompound(pages[i]))
				get_page(pages[i]);
		req->refcount[PINZOO_RC_ACQUIRED] = rc_of(pages[0]);
		for (i = 0; i < got; i++)
			put_page(pages[i]);
		req->released = got;
		req->refcount[PINZOO_RC_RELEASED] = rc_of(pages[0]);
		/* The damage stays until RELEASE_ALL, for the auditor to see. */
		req->handle = keep(pages, got, HELD_PIN_PUT, 0);
		kept = true;
		break;
	case PINZOO_GET_UNPIN:
		for (i = 0; i < got; i++) {
			if (PageCompound(pages[i])) {
				for (i = 0; i < got; i++)
					put_page(pages[i]);
				kvfree(pages);
				return -EOPNOTSUPP;
			}
		}
		/* Pad so that the unpin's -1024 cannot underflow the refcount. */
		for (i = 0; i < got; i++)
			page_ref_add(pages[i], PINZOO_PIN_BIAS);
		req->refcount[PINZOO_RC_ACQUIRED] = rc_of(pages[0]);
		for (i = 0; i < got; i++)
			unpin_user_page(pages[i]);
		req->released = got;
		req->refcount[PINZOO_RC_RELEASED] = rc_of(pages[0]);
		/* The unpin consumed the padding; drop the real FOLL_GET ref. */
		for (i = 0; i < got; i++)
			put_page(pages[i]);
		req->refcount[PINZOO_RC_REPAIRED] = rc_of(pages[0]);
		break;
	case PINZOO_DOUBLE_UNPIN:
		for (i = 0; i < got; i++) {
			if (PageCompound(pages[i])) {
				unpin_user_pages(pages, got);
				kvfree(pages);
				return -EOPNOTSUPP;
			}
		}
		for (i = 0; i < got; i++)
			page_ref_add(pages[i], PINZOO_PIN_BIAS);
		req->refcount[PINZOO_RC_ACQUIRED] = rc_of(pages[0]);
		unpin_user_pages(pages, got);
		unpin_user_pages(pages, got);
		req->released = 2 * got;
		req->refcount[PINZOO_RC_RELEASED] = rc_of(pages[0]);
		break;
	default:
		unpin_user_pages(pages, got);
		kvfree(pages);
		return -EINVAL;
	}
	if (kept && !req->handle) {
		/* Could not keep the holding: do not leave it behind. */
		unpin_user_pages(pages, got);
		kvfree(pages);
		return -ENOMEM;
	}
out_free:
	if (!kept)
		kvfree(pages);
	return 0;
}

static void release(u64 handle, bool all, struct pinzoo_release *out)
{
	struct held *h, *tmp;
	LIST_HEAD(undo);
	LIST_HEAD(done);

	mutex_lock(&held_lock);
	list_for_each_entry_safe(h, tmp, &held_list, node) {
		if (!all && h->handle != handle)
			continue;
		if (h->done) {
			list_move_tail(&h->node, &done);
			continue;
		}
		/* A delayed release already running finishes on its own. */
		if (h->delayed && !cancel_delayed_work(&h->work))
			continue;
		list_move_tail(&h->node, &undo);
	}
	list_for_each_entry(h, &held_list, node)
		if (!h->done)
			out->held += h->nr;
	mutex_unlock(&held_lock);
	list_for_each_entry_safe(h, tmp, &undo, node) {
		held_undo(h, out);
		held_free(h);
	}
	list_for_each_entry_safe(h, tmp, &done, node)
		held_free(h);
}

/*
 * Plants in the kernel's bio release. From 6.5 a Direct I/O bio of user
 * pages carries BIO_PAGE_PINNED and bio_release_pages(), an inline wrapper
 * that tests the flag, calls __bio_release_pages() to unpin each page
 * (6.12: per folio, unpin_user_folio). The flag is tested before the call,
 * so clearing it in a probe of the callee changes nothing: the pre-handler
 * empties the bio's vector instead (bi_vcnt = 0: the release walks none;
 * nothing after the release reads it, bio_put frees by bi_max_vecs).
 * Before 6.5 the release drops FOLL_GET references with put_page: there is
 * no pin to get wrong, and PLANT is refused.
 *
 * The pre-handler runs where the bio completes: in the submitter for
 * synchronous block-device reads and SG_IO (blk_rq_unmap_user), in
 * interrupt context or a worker for iomap and asynchronous completions,
 * where the tgid filter never matches.
 */
#define PLANT_MAX_PAGES 65536
#define PLANT_MAX_COUNT 4096

#if LINUX_VERSION_CODE >= KERNEL_VERSION(6, 5, 0)

struct plant_page {
	struct page *page;
	bool dirty; /* the release was asked to dirty it (a read) */
};

static struct {
	struct kprobe kp;
	bool registered;
	bool armed;
	u32 kind, tgid, left;
	u64 bios, skipped;
	unsigned long nr; /* pages kept */
	struct plant_page *kept;
} plant;
static DEFINE_SPINLOCK(plant_lock); /* the pre-handler's state */
static DEFINE_MUTEX(plant_mutex);   /* PLANT against UNPLANT */

static unsigned long folio_iter_pages(const struct folio_iter *fi)
{
	return (fi->offset + fi->length - 1) / PAGE_SIZE - fi->offset / PAGE_SIZE + 1;
}

static int plant_pre(struct kprobe *p, struct pt_regs *regs)
{
	struct bio *bio = (struct bio *)regs_get_kernel_argument(regs, 0);
	bool dirty = (u8)regs_get_kernel_argument(regs, 1);
	unsigned long flags, need = 0, i;
	struct folio_iter fi;

	if (!READ_ONCE(plant.armed))
		return 0;
	spin_lock_irqsave(&plant_lock, flags);
	if (!plant.armed)
		goto out;
	if (plant.tgid && (!in_task() || current->tgid != plant.tgid))
		goto skip;
	bio_for_each_folio_all(fi, bio) {
		/*
		 * put_page on a large folio's pinned pages leaves it with its
		 * pin count and too few references: freed while pinned once
		 * unmapped. bio-put plants on small pages only.
		 */
		if (plant.kind == PINZOO_PLANT_BIO_PUT && folio_test_large(fi.folio))
			goto skip;
		need += folio_iter_pages(&fi);
	}
	if (!need || plant.nr + need > PLANT_MAX_PAGES)
		goto skip;
	bio_for_each_folio_all(fi, bio) {
		for (i = 0; i < folio_iter_pages(&fi); i++) {
			struct page *page = folio_page(fi.folio, fi.offset / PAGE_SIZE + i);

			plant.kept[plant.nr++] = (struct plant_page){ page, dirty };
			/* The half-converted release: FOLL_GET's put for a pin. */
			if (plant.kind == PINZOO_PLANT_BIO_PUT)
				put_page(page);
		}
	}
	/*
	 * bio-put: what a bio that lost BIO_PAGE_PINNED gets (the bug
	 * "block: Fix dio_bio_alloc() to set BIO_PAGE_PINNED" fixed), the flag
	 * cleared to match. bio-leak keeps the flag: a release that says it
	 * unpins and does not.
	 */
	if (plant.kind == PINZOO_PLANT_BIO_PUT)
		bio_clear_flag(bio, BIO_PAGE_PINNED);
	bio->bi_vcnt = 0;
	plant.bios++;
	if (--plant.left == 0)
		plant.armed = false;
	goto out;
skip:
	plant.skipped++;
out:
	spin_unlock_irqrestore(&plant_lock, flags);
	return 0;
}

static long plant_arm(struct pinzoo_plant *req)
{
	long ret = 0;

	if (req->kind != PINZOO_PLANT_BIO_LEAK && req->kind != PINZOO_PLANT_BIO_PUT)
		return -EINVAL;
	if (!req->count || req->count > PLANT_MAX_COUNT)
		return -ERANGE;
	mutex_lock(&plant_mutex);
	if (plant.registered) {
		ret = -EBUSY;
		goto out;
	}
	plant.kept = kvcalloc(PLANT_MAX_PAGES, sizeof(*plant.kept), GFP_KERNEL);
	if (!plant.kept) {
		ret = -ENOMEM;
		goto out;
	}
	plant.kind = req->kind;
	plant.tgid = req->tgid;
	plant.left = req->count;
	plant.bios = plant.skipped = plant.nr = 0;
	plant.armed = true;
	memset(&plant.kp, 0, sizeof(plant.kp));
	plant.kp.symbol_name = "__bio_release_pages";
	plant.kp.pre_handler = plant_pre;
	ret = register_kprobe(&plant.kp);
	if (ret) {
		plant.armed = false;
		kvfree(plant.kept);
		plant.kept = NULL;
		goto out;
	}
	plant.registered = true;
out:
	mutex_unlock(&plant_mutex);
	return ret;
}

/* Disarms, then gives back what the plant kept: no handler runs after this. */
static void plant_disarm(struct pinzoo_plant *out)
{
	unsigned long i;

	mutex_lock(&plant_mutex);
	if (!plant.registered)
		goto out;
	out->planted = 1;
	spin_lock_irq(&plant_lock);
	out->armed = plant.armed;
	plant.armed = false;
	spin_unlock_irq(&plant_lock);
	/* Waits for every running pre-handler. */
	unregister_kprobe(&plant.kp);
	plant.registered = false;
	for (i = 0; i < plant.nr; i++) {
		struct page *page = plant.kept[i].page;

		if (plant.kind == PINZOO_PLANT_BIO_PUT) {
			get_page(page);
			out->repaired++;
		} else {
			out->unpinned++;
		}
		unpin_user_pages_dirty_lock(&page, 1, plant.kept[i].dirty);
	}
	out->bios = plant.bios;
	out->pages = plant.nr;
	out->skipped = plant.skipped;
	kvfree(plant.kept);
	plant.kept = NULL;
out:
	mutex_unlock(&plant_mutex);
}
#else
static long plant_arm(struct pinzoo_plant *req)
{
	return -EOPNOTSUPP;
}

static void plant_disarm(struct pinzoo_plant *out)
{
}
#endif

static long pinzoo_ioctl(struct file *file, unsigned int cmd, unsigned long arg)
{
	void __user *uarg = (void __user *)arg;
	struct pinzoo_release rel;
	struct pinzoo_plant pl;
	struct pinzoo_req req;
	long ret;

	switch (cmd) {
	case PINZOO_IOC_RUN:
		if (copy_from_user(&req, uarg, sizeof(req)))
			return -EFAULT;
		req.acquired = req.released = 0;
		req.handle = req.folio = 0;
		req.large = req.version = 0;
		memset(req.refcount, 0, sizeof(req.refcount));
		ret = run(&req);
		if (ret)
			return ret;
		return copy_to_user(uarg, &req, sizeof(req)) ? -EFAULT : 0;
	case PINZOO_IOC_RELEASE:
	case PINZOO_IOC_RELEASE_ALL:
		if (copy_from_user(&rel, uarg, sizeof(rel)))
			return -EFAULT;
		rel.unpinned = rel.repaired = rel.held = 0;
		release(rel.handle, cmd == PINZOO_IOC_RELEASE_ALL, &rel);
		return copy_to_user(uarg, &rel, sizeof(rel)) ? -EFAULT : 0;
	case PINZOO_IOC_PLANT:
		if (copy_from_user(&pl, uarg, sizeof(pl)))
			return -EFAULT;
		ret = plant_arm(&pl);
		if (ret)
			return ret;
		pl.version = PINZOO_VERSION;
		return copy_to_user(uarg, &pl, sizeof(pl)) ? -EFAULT : 0;
	case PINZOO_IOC_UNPLANT:
		memset(&pl, 0, sizeof(pl));
		plant_disarm(&pl);
		pl.version = PINZOO_VERSION;
		return copy_to_user(uarg, &pl, sizeof(pl)) ? -EFAULT : 0;
	}
	return -ENOTTY;
}

static const struct file_operations pinzoo_fops = {
	.owner = THIS_MODULE,
	.unlocked_ioctl = pinzoo_ioctl,
};

static struct miscdevice pinzoo_dev = {
	.minor = MISC_DYNAMIC_MINOR,
	.name = "pinzoo",
	.fops = &pinzoo_fops,
	.mode = 0600,
};

static int __init pinzoo_init(void)
{
	return misc_register(&pinzoo_dev);
}

static void __exit pinzoo_exit(void)
{
	struct pinzoo_release ignored = {};
	struct pinzoo_plant unplanted = {};
	struct held *h;

	misc_deregister(&pinzoo_dev);
	plant_disarm(&unplanted);
	/* No ioctl can run now: the list changes only here. */
	list_for_each_entry(h, &held_list, node) {
		if (h->delayed) {
			cancel_delayed_work_sync(&h->work);
			h->delayed = false;
		}
	}
	release(0, true, &ignored);
}

module_init(pinzoo_init);
module_exit(pinzoo_exit);
MODULE_LICENSE("GPL");
MODULE_DESCRIPTION("Plants page-pin bugs on demand for testing pin auditors");
