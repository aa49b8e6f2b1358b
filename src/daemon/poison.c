/* SPDX-License-Identifier: Apache-2.0 */
/*
 * poison.c: counting the crashes of the plugin per record, across restarts
 * and hosts, and keeping records that reached poison.max_crashes from the
 * plugin (poison.h, src/daemon/README.md "Poison records").
 *
 * Invariants: the per-record work is a few stores into a shared file
 * mapping (no syscall, no lock); every lease write is an idempotent merge
 * (per-worker maximum, removal, pruning below the checkpoint) made
 * conditional on the attribute's old value, so a repeated or racing write
 * never counts a crash twice; the fatal-signal handler only does
 * async-signal-safe things (an atomic store, sigaction, raise).
 */
#include "config.h"

#include "poison.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <json-c/json.h>

#include "log.h"
#include "util.h"

/* ================================================================ marks file */

#define MARKS_MAGIC "KLPOISN1"
#define MARKS_VERSION 1
#define SLOT_SIZE 512
#define SEQ_FIELD 136                /* ESN_SEQ_MAX + 1, rounded up */
#define MARKS_MAX_SLOTS 4096         /* what an old file may claim (consumer.threads <= 1024) */

enum slot_state {
	SLOT_FREE = 0,
	SLOT_IDLE,                   /* claimed by a shard thread, plugin not running */
	SLOT_IN_PLUGIN,              /* the plugin has the record in seq/sub */
	SLOT_CRASHED,                /* ... and the fatal-signal handler ran on that thread */
};

/* The file: a header, then n_slots slots. Host byte order (a local file). */
struct marks_header {
	char magic[8];
	uint32_t version;
	uint32_t slot_size;
	uint32_t n_slots;
	uint32_t reserved[11];
};

/* One shard thread's slot, in the mapping. state is written last when a
 * record enters, so a slot that says IN_PLUGIN always holds a whole ESN;
 * ahead likewise after seq/sub. */
struct poison_slot {
	_Atomic uint32_t state;
	_Atomic uint32_t ahead;      /* 0, or 1 + the crashes before an attempt at seq/sub
				      * that is counted ahead in the lease */
	uint64_t sub;
	char seq[SEQ_FIELD];
	char key[POISON_KEY_MAX + 1];
	char pad[SLOT_SIZE - 16 - SEQ_FIELD - (POISON_KEY_MAX + 1)];
};

_Static_assert(sizeof(struct marks_header) == 64, "marks header layout");
_Static_assert(sizeof(struct poison_slot) == SLOT_SIZE, "marks slot layout");
_Static_assert(SEQ_FIELD > ESN_SEQ_MAX, "a slot holds any sequence number");
_Static_assert(ATOMIC_INT_LOCK_FREE == 2, "the signal handler needs lock-free atomics");

struct poison_marks {
	int fd;
	void *map;
	size_t map_len;
	struct poison_slot *slots;
	uint32_t n_slots;
	pthread_mutex_t mu;
	bool *used;
};

/* The slot of the calling shard thread, for the fatal-signal handler. */
static _Thread_local struct poison_slot *tl_slot;

static size_t marks_len(uint32_t n_slots)
{
	return sizeof(struct marks_header) + (size_t)n_slots * SLOT_SIZE;
}

/* A NUL-terminated, non-empty string inside field[0..size). */
static bool field_str(const char *field, size_t size)
{
	return field[0] && memchr(field, '\0', size) != NULL;
}

static bool same_crash(const struct poison_crash *a, const char *key, const struct esn *e)
{
	return strcmp(a->key, key) == 0 && esn_cmp(&a->esn, e) == 0;
}

/*
 * Collects what an old file's bytes tell: crashes (the slots the handler
 * marked if any, else every slot inside the plugin) and attempts counted
 * ahead. Duplicates (two threads on one record) count once.
 */
static enum kl_err collect(const unsigned char *buf, size_t len, struct poison_crash **ret,
			   size_t *ret_n)
{
	struct marks_header h;
	struct poison_crash *out = NULL;
	size_t n = 0, slots;
	bool any_crashed = false;

	*ret = NULL;
	*ret_n = 0;
	if (len < sizeof(h))
		return KL_OK;
	memcpy(&h, buf, sizeof(h));
	if (memcmp(h.magic, MARKS_MAGIC, 8) != 0 || h.version != MARKS_VERSION ||
	    h.slot_size != SLOT_SIZE)
		return KL_OK;  /* not ours, or a later layout: nothing to learn */
	slots = (len - sizeof(h)) / SLOT_SIZE;
	if (slots > h.n_slots)
		slots = h.n_slots;
	for (int pass = 0; pass < 2; pass++) {
		for (size_t i = 0; i < slots; i++) {
			struct poison_slot s;
			struct poison_crash *c = NULL;
			uint32_t state, ahead;
			bool crashed;
			struct esn e;

			memcpy(&s, buf + sizeof(h) + i * SLOT_SIZE, sizeof(s));
			state = atomic_load(&s.state);
			ahead = atomic_load(&s.ahead);
			if (pass == 0) {
				any_crashed |= state == SLOT_CRASHED;
				continue;
			}
			crashed = any_crashed ? state == SLOT_CRASHED : state == SLOT_IN_PLUGIN;
			if (state == SLOT_FREE)
				ahead = 0;
			if ((!crashed && !ahead) || !field_str(s.key, sizeof(s.key)) ||
			    !field_str(s.seq, sizeof(s.seq)) || esn_set(s.seq, s.sub, &e, NULL) != KL_OK)
				continue;
			for (size_t k = 0; k < n && !c; k++)
				if (same_crash(&out[k], s.key, &e))
					c = &out[k];
			if (!c) {
				if (!out && !(out = calloc(slots, sizeof(*out))))
					return KL_ENOMEM;
				c = &out[n++];
				snprintf(c->key, sizeof(c->key), "%s", s.key);
				c->esn = e;
			}
			c->crashed |= crashed;
			c->in_handler |= crashed && state == SLOT_CRASHED;
			if (ahead && (!c->ahead || ahead - 1 > c->ahead_base)) {
				c->ahead = true;
				c->ahead_base = ahead - 1;
			}
		}
	}
	*ret = out;
	*ret_n = n;
	return KL_OK;
}

/* Reads the whole old file (bounded) into *ret_buf. */
static enum kl_err read_old(int fd, unsigned char **ret_buf, size_t *ret_len)
{
	struct stat st;
	size_t len, got = 0;
	unsigned char *buf;

	*ret_buf = NULL;
	*ret_len = 0;
	if (fstat(fd, &st) != 0)
		return KL_EIO;
	len = (size_t)st.st_size;
	if (len > marks_len(MARKS_MAX_SLOTS))
		len = marks_len(MARKS_MAX_SLOTS);
	if (len == 0)
		return KL_OK;
	buf = malloc(len);
	if (!buf)
		return KL_ENOMEM;
	while (got < len) {
		ssize_t r = pread(fd, buf + got, len - got, (off_t)got);

		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0)
			break;
		got += (size_t)r;
	}
	*ret_buf = buf;
	*ret_len = got;
	return KL_OK;
}

void poison_marks_close(struct poison_marks *m)
{
	if (!m)
		return;
	if (m->map && m->map != MAP_FAILED)
		munmap(m->map, m->map_len);
	if (m->fd >= 0)
		close(m->fd);  /* drops the lock */
	pthread_mutex_destroy(&m->mu);
	free(m->used);
	free(m);
}

enum kl_err poison_marks_open(const char *path, uint32_t n_slots, struct poison_marks **ret_m,
			      struct poison_crash **ret_crashes, size_t *ret_n,
			      struct kl_errinfo *info)
{
	struct poison_marks *m;
	struct marks_header h;
	unsigned char *old = NULL;
	size_t old_len = 0;
	struct poison_crash *crashes = NULL;
	size_t n = 0;
	enum kl_err err;

	if (!path || n_slots == 0 || n_slots > MARKS_MAX_SLOTS)
		return kl_errinfo_set(info, KL_EINVAL, "poison: bad marks file arguments");
	m = calloc(1, sizeof(*m));
	if (!m)
		return kl_errinfo_set(info, KL_ENOMEM, "poison: out of memory");
	m->fd = -1;
	pthread_mutex_init(&m->mu, NULL);
	m->n_slots = n_slots;
	m->used = calloc(n_slots, sizeof(*m->used));
	if (!m->used) {
		poison_marks_close(m);
		return kl_errinfo_set(info, KL_ENOMEM, "poison: out of memory");
	}
	m->fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
	if (m->fd < 0) {
		if (info)
			info->sys_errno = errno;
		err = kl_errinfo_set(info, KL_EIO, "poison: cannot open %s: %s", path, strerror(errno));
		poison_marks_close(m);
		return err;
	}
	if (flock(m->fd, LOCK_EX | LOCK_NB) != 0) {
		int e = errno;

		if (info)
			info->sys_errno = e;
		err = e == EWOULDBLOCK ?
			kl_errinfo_set(info, KL_ESTATE, "poison: %s is locked: another kinlake process "
				       "uses this state_dir", path) :
			kl_errinfo_set(info, KL_EIO, "poison: cannot lock %s: %s", path, strerror(e));
		poison_marks_close(m);
		return err;
	}
	err = read_old(m->fd, &old, &old_len);
	if (!err)
		err = collect(old, old_len, &crashes, &n);
	free(old);
	if (err) {
		poison_marks_close(m);
		return kl_errinfo_set(info, err, "poison: cannot read %s", path);
	}
	/* A clean file: cut to nothing first, so the old slots are gone even
	 * if the new size is the same. */
	m->map_len = marks_len(n_slots);
	if (ftruncate(m->fd, 0) != 0 || ftruncate(m->fd, (off_t)m->map_len) != 0 ||
	    (m->map = mmap(NULL, m->map_len, PROT_READ | PROT_WRITE, MAP_SHARED, m->fd, 0)) ==
		    MAP_FAILED) {
		if (info)
			info->sys_errno = errno;
		err = kl_errinfo_set(info, KL_EIO, "poison: cannot set up %s: %s", path, strerror(errno));
		free(crashes);
		poison_marks_close(m);
		return err;
	}
	memset(&h, 0, sizeof(h));
	memcpy(h.magic, MARKS_MAGIC, 8);
	h.version = MARKS_VERSION;
	h.slot_size = SLOT_SIZE;
	h.n_slots = n_slots;
	memcpy(m->map, &h, sizeof(h));
	m->slots = (struct poison_slot *)((char *)m->map + sizeof(h));
	/* Once at start-up: an OS crash must not bring the old slots back. */
	msync(m->map, m->map_len, MS_SYNC);
	*ret_m = m;
	*ret_crashes = crashes;
	*ret_n = n;
	return KL_OK;
}

enum kl_err poison_marks_claim(struct poison_marks *m, const char *key,
			       struct poison_slot **ret_slot, struct kl_errinfo *info)
{
	struct poison_slot *s = NULL;
	size_t len = key ? strlen(key) : 0;

	if (!len || len > POISON_KEY_MAX)
		return kl_errinfo_set(info, KL_EINVAL, "poison: lease key empty or longer than %d bytes",
				      POISON_KEY_MAX);
	pthread_mutex_lock(&m->mu);
	for (uint32_t i = 0; i < m->n_slots && !s; i++)
		if (!m->used[i]) {
			m->used[i] = true;
			s = &m->slots[i];
		}
	pthread_mutex_unlock(&m->mu);
	if (!s)
		return kl_errinfo_set(info, KL_ENOSPC, "poison: all %" PRIu32 " marks slots in use",
				      m->n_slots);
	memset(s->key, 0, sizeof(s->key));
	memcpy(s->key, key, len);
	s->seq[0] = '\0';
	atomic_store(&s->ahead, 0);
	atomic_store(&s->state, SLOT_IDLE);
	tl_slot = s;
	*ret_slot = s;
	return KL_OK;
}

void poison_marks_release(struct poison_marks *m, struct poison_slot *s)
{
	if (!s)
		return;
	if (tl_slot == s)
		tl_slot = NULL;
	atomic_store(&s->ahead, 0);
	atomic_store(&s->state, SLOT_FREE);
	pthread_mutex_lock(&m->mu);
	m->used[s - m->slots] = false;
	pthread_mutex_unlock(&m->mu);
}

void poison_slot_enter(struct poison_slot *s, const char *seq, uint64_t sub)
{
	size_t n = strnlen(seq, ESN_SEQ_MAX);

	memcpy(s->seq, seq, n);
	s->seq[n] = '\0';
	s->sub = sub;
	atomic_store_explicit(&s->state, SLOT_IN_PLUGIN, memory_order_release);
}

void poison_slot_leave(struct poison_slot *s)
{
	atomic_store_explicit(&s->state, SLOT_IDLE, memory_order_release);
}

void poison_slot_ahead(struct poison_slot *s, const char *seq, uint64_t sub, uint32_t base)
{
	size_t n = strnlen(seq, ESN_SEQ_MAX);

	memcpy(s->seq, seq, n);
	s->seq[n] = '\0';
	s->sub = sub;
	atomic_store_explicit(&s->ahead, base == UINT32_MAX ? base : base + 1, memory_order_release);
}

void poison_slot_ahead_done(struct poison_slot *s)
{
	atomic_store_explicit(&s->ahead, 0, memory_order_release);
}

/* ---------------------------------------------------------------- the handler */

static const int fatal_signals[] = { SIGSEGV, SIGBUS, SIGILL, SIGFPE, SIGABRT };
static struct sigaction saved_actions[sizeof(fatal_signals) / sizeof(fatal_signals[0])];
static atomic_bool handler_installed;

static void on_fatal_signal(int sig, siginfo_t *si, void *uctx)
{
	struct poison_slot *s = tl_slot;
	int saved_errno = errno;

	(void)uctx;
	/* A fault (si_code > 0) or abort()/raise() of this process: not a
	 * signal sent from outside (a watchdog's SIGABRT names no record). */
	if (s && si && (si->si_code > 0 || si->si_pid == getpid())) {
		uint32_t want = SLOT_IN_PLUGIN;

		atomic_compare_exchange_strong(&s->state, &want, SLOT_CRASHED);
	}
	/* Whatever was there before (the default: core dump) acts when the
	 * handler returns: the raised signal is pending until then. */
	for (size_t i = 0; i < KL_ARRAY_LEN(fatal_signals); i++)
		if (fatal_signals[i] == sig)
			sigaction(sig, &saved_actions[i], NULL);
	raise(sig);
	errno = saved_errno;
}

void poison_handler_install(void)
{
	struct sigaction sa;

	if (atomic_exchange(&handler_installed, true))
		return;
	memset(&sa, 0, sizeof(sa));
	sa.sa_sigaction = on_fatal_signal;
	sa.sa_flags = SA_SIGINFO | SA_ONSTACK;
	sigemptyset(&sa.sa_mask);
	for (size_t i = 0; i < KL_ARRAY_LEN(fatal_signals); i++)
		sigaction(fatal_signals[i], &sa, &saved_actions[i]);
}

/* ================================================================ the lease attribute */

#define TABLE_DECODE_MAX 4096        /* entries or workers accepted when reading */
#define RMW_TRIES 6

void poison_table_done(struct poison_table *t)
{
	if (!t)
		return;
	for (size_t i = 0; i < t->n; i++) {
		for (size_t k = 0; k < t->v[i].n_by; k++)
			free(t->v[i].by[k].worker);
		free(t->v[i].by);
	}
	free(t->v);
	t->v = NULL;
	t->n = 0;
}

static int by_cmp(const void *a, const void *b)
{
	return strcmp(((const struct poison_by *)a)->worker, ((const struct poison_by *)b)->worker);
}

static ssize_t entry_find(const struct poison_table *t, const struct esn *e)
{
	for (size_t i = 0; i < t->n; i++)
		if (esn_cmp(&t->v[i].esn, e) == 0)
			return (ssize_t)i;
	return -1;
}

/* The entry for e, inserted (sorted) if missing; NULL without memory. */
static struct poison_entry *entry_get(struct poison_table *t, const struct esn *e)
{
	struct poison_entry *v;
	ssize_t at = entry_find(t, e);
	size_t pos = 0;

	if (at >= 0)
		return &t->v[at];
	v = realloc(t->v, (t->n + 1) * sizeof(*v));
	if (!v)
		return NULL;
	t->v = v;
	while (pos < t->n && esn_cmp(&t->v[pos].esn, e) < 0)
		pos++;
	memmove(&t->v[pos + 1], &t->v[pos], (t->n - pos) * sizeof(*v));
	memset(&t->v[pos], 0, sizeof(*v));
	t->v[pos].esn = *e;
	t->n++;
	return &t->v[pos];
}

static void entry_remove(struct poison_table *t, size_t i)
{
	for (size_t k = 0; k < t->v[i].n_by; k++)
		free(t->v[i].by[k].worker);
	free(t->v[i].by);
	memmove(&t->v[i], &t->v[i + 1], (t->n - 1 - i) * sizeof(t->v[0]));
	t->n--;
}

/* Raises worker's count in e to at least count. True when it changed. */
static bool by_raise(struct poison_entry *e, const char *worker, uint32_t count)
{
	struct poison_by *by;
	char *w;

	for (size_t k = 0; k < e->n_by; k++)
		if (strcmp(e->by[k].worker, worker) == 0) {
			if (e->by[k].count >= count)
				return false;
			e->by[k].count = count;
			return true;
		}
	if (count == 0 || e->n_by >= POISON_MAX_WORKERS)
		return false;
	w = strdup(worker);
	by = w ? realloc(e->by, (e->n_by + 1) * sizeof(*by)) : NULL;
	if (!by) {
		free(w);
		return false;
	}
	e->by = by;
	e->by[e->n_by].worker = w;
	e->by[e->n_by].count = count;
	e->n_by++;
	qsort(e->by, e->n_by, sizeof(*e->by), by_cmp);
	return true;
}

uint32_t poison_table_count(const struct poison_table *t, const struct esn *esn,
			    const char *worker, uint32_t *ret_mine)
{
	ssize_t i = entry_find(t, esn);
	uint64_t sum = 0;
	uint32_t mine = 0;

	if (i >= 0)
		for (size_t k = 0; k < t->v[i].n_by; k++) {
			sum += t->v[i].by[k].count;
			if (worker && strcmp(t->v[i].by[k].worker, worker) == 0)
				mine = t->v[i].by[k].count;
		}
	if (ret_mine)
		*ret_mine = mine;
	return sum > UINT32_MAX ? UINT32_MAX : (uint32_t)sum;
}

static enum kl_err bad_table(struct kl_errinfo *info, const char *why)
{
	return kl_errinfo_set(info, KL_EPARSE, "poison: lease attribute " POISON_LEASE_ATTR ": %s", why);
}

/* One {"seq","sub","by"} object into t. */
static enum kl_err decode_entry(json_object *o, struct poison_table *t, struct kl_errinfo *info)
{
	json_object *seq, *sub, *by;
	struct poison_entry *e;
	struct esn esn;
	int64_t s;

	if (!json_object_is_type(o, json_type_object) ||
	    !json_object_object_get_ex(o, "seq", &seq) || !json_object_is_type(seq, json_type_string) ||
	    !json_object_object_get_ex(o, "sub", &sub) || !json_object_is_type(sub, json_type_int) ||
	    !json_object_object_get_ex(o, "by", &by) || !json_object_is_type(by, json_type_object))
		return bad_table(info, "an entry lacks seq, sub or by");
	s = json_object_get_int64(sub);
	if (s < 0 || esn_set(json_object_get_string(seq), (uint64_t)s, &esn, NULL) != KL_OK)
		return bad_table(info, "an entry has a bad ESN");
	if (entry_find(t, &esn) >= 0)
		return bad_table(info, "an ESN appears twice");
	if (!(e = entry_get(t, &esn)))
		return kl_errinfo_set(info, KL_ENOMEM, "poison: out of memory");
	json_object_object_foreach(by, worker, val) {
		int64_t n = json_object_get_int64(val);

		if (!json_object_is_type(val, json_type_int) || n < 1 || n > UINT32_MAX || !*worker)
			return bad_table(info, "a count is not a positive integer");
		if (e->n_by >= TABLE_DECODE_MAX)
			return bad_table(info, "too many workers");
		if (!by_raise(e, worker, (uint32_t)n) && e->n_by < POISON_MAX_WORKERS)
			return kl_errinfo_set(info, KL_ENOMEM, "poison: out of memory");
	}
	return KL_OK;
}

enum kl_err poison_table_decode(const char *ddb_json, struct poison_table *ret,
				struct kl_errinfo *info)
{
	struct poison_table t = { NULL, 0 };
	json_object *outer = NULL, *doc = NULL, *s, *v, *list;
	enum kl_err err = KL_OK;

	if (!ddb_json) {
		*ret = t;
		return KL_OK;
	}
	outer = json_tokener_parse(ddb_json);
	if (!json_object_is_type(outer, json_type_object) ||
	    !json_object_object_get_ex(outer, "S", &s) || !json_object_is_type(s, json_type_string)) {
		json_object_put(outer);
		return bad_table(info, "not a string attribute");
	}
	doc = json_tokener_parse(json_object_get_string(s));
	if (!json_object_is_type(doc, json_type_object) ||
	    !json_object_object_get_ex(doc, "v", &v) || !json_object_is_type(v, json_type_int) ||
	    json_object_get_int64(v) != 1)
		err = bad_table(info, "not version 1");
	else if (!json_object_object_get_ex(doc, "crashes", &list) ||
		 !json_object_is_type(list, json_type_array) ||
		 json_object_array_length(list) > TABLE_DECODE_MAX)
		err = bad_table(info, "no crashes array");
	for (size_t i = 0; !err && i < json_object_array_length(list); i++)
		err = decode_entry(json_object_array_get_idx(list, i), &t, info);
	json_object_put(doc);
	json_object_put(outer);
	if (err) {
		poison_table_done(&t);
		return err;
	}
	*ret = t;
	return KL_OK;
}

enum kl_err poison_table_encode(const struct poison_table *t, char **ret)
{
	json_object *doc, *list, *outer = NULL;
	enum kl_err err = KL_ENOMEM;
	const char *text;

	*ret = NULL;
	if (!t->n)
		return KL_OK;
	doc = json_object_new_object();
	list = json_object_new_array();
	if (!doc || !list) {
		json_object_put(doc);
		json_object_put(list);
		return KL_ENOMEM;
	}
	json_object_object_add(doc, "v", json_object_new_int(1));
	json_object_object_add(doc, "crashes", list);
	for (size_t i = 0; i < t->n; i++) {
		json_object *e = json_object_new_object(), *by = json_object_new_object();

		if (!e || !by) {
			json_object_put(e);
			json_object_put(by);
			goto out;
		}
		json_object_object_add(e, "seq", json_object_new_string(t->v[i].esn.seq));
		json_object_object_add(e, "sub", json_object_new_int64((int64_t)t->v[i].esn.sub));
		for (size_t k = 0; k < t->v[i].n_by; k++)
			json_object_object_add(by, t->v[i].by[k].worker,
					       json_object_new_int64(t->v[i].by[k].count));
		json_object_object_add(e, "by", by);
		json_object_array_add(list, e);
	}
	text = json_object_to_json_string_ext(doc, JSON_C_TO_STRING_PLAIN |
						   JSON_C_TO_STRING_NOSLASHESCAPE);
	outer = text ? json_object_new_object() : NULL;
	if (!outer)
		goto out;
	json_object_object_add(outer, "S", json_object_new_string(text));
	text = json_object_to_json_string_ext(outer, JSON_C_TO_STRING_PLAIN |
						     JSON_C_TO_STRING_NOSLASHESCAPE);
	if (text && (*ret = strdup(text)) != NULL)
		err = KL_OK;
out:
	json_object_put(outer);
	json_object_put(doc);
	return err;
}

/* ---------------------------------------------------------------- read-modify-write */

/* Is e done: at or below checkpoint cp? */
static bool esn_done(const struct esn *e, const struct lease_esn *cp)
{
	int c;

	if (cp->kind == LEASE_ESN_SHARD_END)
		return true;
	if (cp->kind != LEASE_ESN_SEQ)
		return false;
	c = lease_dec_cmp(e->seq, cp->seq);
	return c < 0 || (c == 0 && e->sub <= cp->subseq);
}

/* Drops entries at or below cp, then the highest ones beyond the cap.
 * True when something went. */
static bool table_prune(struct poison_table *t, const struct lease_esn *cp)
{
	bool changed = false;

	for (size_t i = t->n; i-- > 0;)
		if (esn_done(&t->v[i].esn, cp)) {
			entry_remove(t, i);
			changed = true;
		}
	while (t->n > POISON_MAX_POSITIONS) {
		entry_remove(t, t->n - 1);
		changed = true;
	}
	return changed;
}

/* An idempotent change of the table, given the lease's checkpoint. True
 * when it changed the table. */
typedef bool (*table_edit)(struct poison_table *t, const struct lease_esn *cp, void *arg);

struct raise_arg {
	const struct esn *esn;
	const char *worker;
	uint32_t count;
};

static bool edit_raise(struct poison_table *t, const struct lease_esn *cp, void *arg)
{
	const struct raise_arg *a = arg;
	struct poison_entry *e;

	if (esn_done(a->esn, cp) || !a->count)
		return false;
	e = entry_get(t, a->esn);
	return e && by_raise(e, a->worker, a->count);
}

/* Sets worker's count exactly (0: removes it; an entry left with no
 * worker goes). Only the worker itself does this to its own count. */
static bool edit_set(struct poison_table *t, const struct lease_esn *cp, void *arg)
{
	const struct raise_arg *a = arg;
	ssize_t i = entry_find(t, a->esn);
	struct poison_entry *e;

	if (esn_done(a->esn, cp))
		return false;
	if (i < 0)
		return edit_raise(t, cp, arg);
	e = &t->v[i];
	for (size_t k = 0; k < e->n_by; k++) {
		if (strcmp(e->by[k].worker, a->worker) != 0)
			continue;
		if (e->by[k].count == a->count)
			return false;
		if (a->count) {
			e->by[k].count = a->count;
			return true;
		}
		free(e->by[k].worker);
		memmove(&e->by[k], &e->by[k + 1], (e->n_by - 1 - k) * sizeof(e->by[0]));
		if (--e->n_by == 0)
			entry_remove(t, (size_t)i);
		return true;
	}
	return edit_raise(t, cp, arg);
}

static bool edit_remove(struct poison_table *t, const struct lease_esn *cp, void *arg)
{
	ssize_t i = entry_find(t, arg);

	(void)cp;
	if (i < 0)
		return false;
	entry_remove(t, (size_t)i);
	return true;
}

struct rows_arg {
	const struct journal_crash *rows;
	size_t n;
	const char *worker;
};

static bool edit_rows(struct poison_table *t, const struct lease_esn *cp, void *arg)
{
	const struct rows_arg *a = arg;
	bool changed = false;

	for (size_t i = 0; i < a->n; i++) {
		struct raise_arg r = { &a->rows[i].esn, a->worker, a->rows[i].count };

		changed |= edit_raise(t, cp, &r);
	}
	return changed;
}

/*
 * Reads the lease of key, applies prune + edit to its crash table and
 * writes it back if it changed, conditional on the old value; a conflict
 * or an unknown outcome re-reads and re-applies (edits are idempotent).
 * On KL_OK the resulting table and the lease's checkpoint go to
 * *ret_table / *ret_cp when not NULL.
 */
static enum kl_err lease_rmw(struct lease_store *st, const char *key, table_edit edit, void *arg,
			     struct poison_table *ret_table, struct lease_esn *ret_cp,
			     struct kl_errinfo *info)
{
	if (!lease_store_has_set_extra(st))
		return kl_errinfo_set(info, KL_EINVAL, "poison: the lease store cannot write %s",
				      POISON_LEASE_ATTR);
	/* Conflicts are other writers: re-read and merge again. A transport
	 * error (the client already retried) is re-read once: it may have
	 * landed, and the merge is idempotent. */
	for (int attempt = 1, unknown = 0;; attempt++) {
		struct poison_table t = { NULL, 0 };
		struct lease l;
		char *value = NULL;
		bool changed;
		enum kl_err err;

		err = lease_store_get(st, key, &l, info);
		if (err)
			return err;
		err = poison_table_decode(lease_get_extra(&l, POISON_LEASE_ATTR), &t, info);
		if (!err) {
			changed = table_prune(&t, &l.checkpoint);
			if (edit)
				changed |= edit(&t, &l.checkpoint, arg);
			if (changed && (err = poison_table_encode(&t, &value)) != KL_OK)
				kl_errinfo_set(info, err, "poison: out of memory");
			else if (changed)
				err = lease_store_set_extra(st, key, POISON_LEASE_ATTR,
							    lease_get_extra(&l, POISON_LEASE_ATTR),
							    value, info);
		}
		free(value);
		if (!err) {
			if (ret_cp)
				*ret_cp = l.checkpoint;
			if (ret_table)
				*ret_table = t;
			else
				poison_table_done(&t);
			lease_done(&l);
			return KL_OK;
		}
		poison_table_done(&t);
		lease_done(&l);
		if (attempt >= RMW_TRIES || (err != KL_ECONFLICT && !kl_err_retryable(err)) ||
		    (err != KL_ECONFLICT && unknown++))
			return err;
		log_debug("poison: %s of '%s': %s, reading it again", POISON_LEASE_ATTR, key,
			  info ? info->message : kl_strerror(err));
	}
}

enum kl_err poison_publish(struct lease_store *store, const char *key, const char *worker_id,
			   const struct esn *esn, uint32_t count, bool exact,
			   struct kl_errinfo *info)
{
	struct raise_arg a = { esn, worker_id, count };

	if (!store || !key || !worker_id || !*worker_id || !esn)
		return kl_errinfo_set(info, KL_EINVAL, "poison: publish: missing argument");
	return lease_rmw(store, key, exact ? edit_set : edit_raise, &a, NULL, NULL, info);
}

/* ================================================================ start-up */

/* Raises the journal's counter of (key, esn) to at least target; the
 * resulting count in *ret_count. */
static enum kl_err journal_raise(struct journal *j, const char *key, const struct esn *esn,
				 uint32_t target, bool bump_once, uint32_t *ret_count,
				 struct kl_errinfo *info)
{
	uint32_t n = 0;
	enum kl_err err = bump_once ? journal_crash_bump(j, key, esn, &n, info) :
				      journal_crash_get(j, key, esn, &n, info);

	while (!err && n < target)
		err = journal_crash_bump(j, key, esn, &n, info);
	if (!err)
		*ret_count = n;
	return err;
}

void poison_count_crashes(struct journal *j, struct poison_crash *crashes, size_t n,
			  uint32_t max_crashes)
{
	for (size_t i = 0; i < n; i++) {
		struct poison_crash *c = &crashes[i];
		struct kl_errinfo info;
		char buf[512];
		enum kl_err err;

		kl_errinfo_clear(&info);
		c->count = 0;
		if (!c->crashed) {
			/* Counted ahead, but the process died of something else
			 * first: this attempt is no crash of this record. */
			err = journal_raise(j, c->key, &c->esn, c->ahead_base, false, &c->count, &info);
			if (err)
				log_debug("poison: %s", info.message);
			c->count = c->ahead_base;
			log_info("poison: shard '%s': the last run died while about to retry record %s "
				 "(sub %" PRIu64 "), not of it: that attempt is not counted", c->key,
				 c->esn.seq, c->esn.sub);
			continue;
		}
		err = journal_raise(j, c->key, &c->esn, c->ahead ? c->ahead_base + 1 : 0, true,
				    &c->count, &info);
		if (err) {
			log_warnx("poison: shard '%s': the last run died in the plugin on record %s "
				  "(sub %" PRIu64 ") but the journal cannot count it: %s", c->key, c->esn.seq,
				  c->esn.sub, kl_errinfo_format(err, &info, buf, sizeof(buf)));
			c->count = c->ahead ? c->ahead_base + 1 : 0;
			continue;
		}
		log_warnx("poison: shard '%s': the last run died in the plugin on record %s "
			  "(sub %" PRIu64 ")%s: crash %" PRIu32 " of this worker (limit %" PRIu32
			  " across the fleet)", c->key, c->esn.seq, c->esn.sub,
			  c->in_handler ? "" : " (no crash handler ran: counted because the plugin had it)",
			  c->count, max_crashes);
	}
}

void poison_publish_crashes(struct lease_store *store, const char *worker_id,
			    const struct poison_crash *crashes, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		const struct poison_crash *c = &crashes[i];
		struct kl_errinfo info;
		char buf[512];
		enum kl_err err;

		if (!c->count && !c->ahead)
			continue;
		kl_errinfo_clear(&info);
		/* An attempt counted ahead is settled exactly (taken back if it
		 * did not crash); other news only raises the count. */
		err = poison_publish(store, c->key, worker_id, &c->esn, c->count, c->ahead, &info);
		if (err == KL_OK)
			log_info("poison: shard '%s': %" PRIu32 " crash%s of '%s' on record %s recorded in "
				 "the lease", c->key, c->count, c->count == 1 ? "" : "es", worker_id,
				 c->esn.seq);
		else
			log_warnx("poison: shard '%s': cannot record the crash in the lease: %s; "
				  "retried when the shard starts here", c->key,
				  kl_errinfo_format(err, &info, buf, sizeof(buf)));
	}
}

/* ================================================================ the guard */

/* A record with crashes behind it. */
struct suspect {
	struct esn esn;
	uint32_t others;             /* other workers' crashes (the lease) */
	uint32_t mine;               /* this worker's: max(journal, lease) */
};

struct poison_guard {
	char *key;
	char *worker_id;
	uint32_t max_crashes;
	struct journal *journal;
	struct lease_store *store;
	struct poison_marks *marks;
	struct poison_slot *slot;
	struct lease_esn checkpoint;
	bool loaded;
	struct suspect *sus;         /* sorted by ESN */
	size_t n_sus;
	size_t cursor;               /* records come in ESN order: sus[cursor] is next */
	ssize_t trying;              /* the suspect the plugin has now, -1: none */
	struct poison_guard_stats stats;
};

static uint32_t sat_add(uint32_t a, uint32_t b)
{
	return a > UINT32_MAX - b ? UINT32_MAX : a + b;
}

static struct suspect *suspect_get(struct poison_guard *g, const struct esn *e)
{
	struct suspect *v;

	for (size_t i = 0; i < g->n_sus; i++)
		if (esn_cmp(&g->sus[i].esn, e) == 0)
			return &g->sus[i];
	v = realloc(g->sus, (g->n_sus + 1) * sizeof(*v));
	if (!v)
		return NULL;
	g->sus = v;
	memset(&v[g->n_sus], 0, sizeof(*v));
	v[g->n_sus].esn = *e;
	return &v[g->n_sus++];
}

static int suspect_cmp(const void *a, const void *b)
{
	return esn_cmp(&((const struct suspect *)a)->esn, &((const struct suspect *)b)->esn);
}

/*
 * At the first record: this host's counters and the lease's, merged.
 * Local counts the lease lacks are published; everything at or below the
 * checkpoint is forgotten. Failures leave this host's counts.
 */
static void guard_load(struct poison_guard *g)
{
	struct journal_crash *rows = NULL;
	size_t n_rows = 0;
	struct poison_table t = { NULL, 0 };
	struct lease_esn done = g->checkpoint;
	struct kl_errinfo info;
	char buf[512];
	enum kl_err err;

	g->loaded = true;
	kl_errinfo_clear(&info);
	err = journal_crash_list(g->journal, g->key, &rows, &n_rows, &info);
	if (err)
		log_warnx("poison: shard '%s': cannot read this host's crash counters: %s", g->key,
			  kl_errinfo_format(err, &info, buf, sizeof(buf)));
	if (g->store && lease_store_has_set_extra(g->store)) {
		struct rows_arg a = { rows, n_rows, g->worker_id };
		struct lease_esn cp;

		kl_errinfo_clear(&info);
		err = lease_rmw(g->store, g->key, edit_rows, &a, &t, &cp, &info);
		if (err) {
			g->stats.lease_errors++;
			log_warnx("poison: shard '%s': crash counts in the lease: %s; using this host's only",
				  g->key, kl_errinfo_format(err, &info, buf, sizeof(buf)));
		} else if (lease_esn_cmp(&cp, &done) > 0) {
			done = cp;
		}
	}
	for (size_t i = 0; i < n_rows; i++) {
		struct suspect *s;

		if (esn_done(&rows[i].esn, &done)) {
			kl_errinfo_clear(&info);
			if (journal_crash_clear(g->journal, g->key, &rows[i].esn, &info) != KL_OK)
				log_debug("poison: %s", info.message);
			continue;
		}
		if ((s = suspect_get(g, &rows[i].esn)) != NULL && rows[i].count > s->mine)
			s->mine = rows[i].count;
	}
	for (size_t i = 0; i < t.n; i++) {
		struct suspect *s;
		uint32_t mine, all;

		if (esn_done(&t.v[i].esn, &done) || !(s = suspect_get(g, &t.v[i].esn)))
			continue;
		all = poison_table_count(&t, &t.v[i].esn, g->worker_id, &mine);
		s->others = all - mine;
		if (mine > s->mine)
			s->mine = mine;
	}
	poison_table_done(&t);
	free(rows);
	if (g->n_sus > 1)
		qsort(g->sus, g->n_sus, sizeof(*g->sus), suspect_cmp);
	g->stats.suspects = (uint32_t)g->n_sus;
	if (g->n_sus)
		log_info("poison: shard '%s': %zu record%s crashed the plugin before; the first, %s "
			 "(sub %" PRIu64 "), %" PRIu32 " time%s (limit %" PRIu32 ")", g->key, g->n_sus,
			 g->n_sus == 1 ? "" : "s", g->sus[0].esn.seq, g->sus[0].esn.sub,
			 sat_add(g->sus[0].others, g->sus[0].mine),
			 sat_add(g->sus[0].others, g->sus[0].mine) == 1 ? "" : "s", g->max_crashes);
}

/* rec's ESN against e, like esn_cmp. */
static int rec_cmp(const struct kl_transform_record *rec, const struct esn *e)
{
	int c = lease_dec_cmp(rec->sequence_number, e->seq);

	if (c)
		return c;
	return rec->sub_sequence_number < e->sub ? -1 : rec->sub_sequence_number > e->sub;
}

static enum consumer_guard_verdict guard_before(void *ctx, const struct kl_transform_record *rec,
						uint32_t *ret_attempts)
{
	struct poison_guard *g = ctx;

	if (!g->loaded)
		guard_load(g);
	/* The hot path ends here unless some record of this shard crashed. */
	if (g->cursor < g->n_sus) {
		int c = 1;

		while (g->cursor < g->n_sus && (c = rec_cmp(rec, &g->sus[g->cursor].esn)) > 0)
			g->cursor++;
		if (g->cursor < g->n_sus && c == 0) {
			struct suspect *s = &g->sus[g->cursor];
			uint32_t total = sat_add(s->others, s->mine);

			if (total >= g->max_crashes) {
				g->cursor++;
				g->stats.routed++;
				log_warnx("poison: shard '%s': record %s (sub %" PRIu64 ") crashed the plugin "
					  "%" PRIu32 " times (limit %" PRIu32 "): sent to the error prefix "
					  "as plugin-crash, skipping", g->key, s->esn.seq, s->esn.sub, total,
					  g->max_crashes);
				*ret_attempts = total;
				return CONSUMER_GUARD_CRASHED;
			}
			g->stats.retried++;
			g->trying = (ssize_t)g->cursor;
			log_warnx("poison: shard '%s': record %s (sub %" PRIu64 ") crashed the plugin "
				  "%" PRIu32 " time%s before (limit %" PRIu32 "): trying it again", g->key,
				  s->esn.seq, s->esn.sub, total, total == 1 ? "" : "s", g->max_crashes);
			/* Counted in the lease before the attempt: if this one
			 * crashes too, whoever takes the shard next knows. */
			if (g->store && lease_store_has_set_extra(g->store)) {
				struct raise_arg a = { &s->esn, g->worker_id, sat_add(s->mine, 1) };
				struct kl_errinfo info;
				char buf[512];
				enum kl_err err;

				/* If the process dies of another record meanwhile, its
				 * next start takes this count back. */
				if (g->slot)
					poison_slot_ahead(g->slot, rec->sequence_number,
							  rec->sub_sequence_number, s->mine);
				kl_errinfo_clear(&info);
				err = lease_rmw(g->store, g->key, edit_raise, &a, NULL, NULL, &info);
				if (err) {
					g->stats.lease_errors++;
					log_warnx("poison: shard '%s': cannot count the attempt in the lease: "
						  "%s; only this host will know if it crashes", g->key,
						  kl_errinfo_format(err, &info, buf, sizeof(buf)));
				}
			}
		}
	}
	if (g->slot)
		poison_slot_enter(g->slot, rec->sequence_number, rec->sub_sequence_number);
	return CONSUMER_GUARD_RUN;
}

/* The suspect g->trying went through the plugin: forget its count. */
static void guard_passed(struct poison_guard *g)
{
	struct suspect *s = &g->sus[g->trying];
	struct kl_errinfo info;
	char buf[512];
	enum kl_err err;

	g->trying = -1;
	g->cursor++;
	g->stats.passed++;
	log_info("poison: shard '%s': record %s (sub %" PRIu64 ") went through the plugin this time; "
		 "its crash count is cleared", g->key, s->esn.seq, s->esn.sub);
	kl_errinfo_clear(&info);
	err = journal_crash_clear(g->journal, g->key, &s->esn, &info);
	if (err)
		log_warnx("poison: shard '%s': %s", g->key, kl_errinfo_format(err, &info, buf, sizeof(buf)));
	if (g->store && lease_store_has_set_extra(g->store)) {
		kl_errinfo_clear(&info);
		err = lease_rmw(g->store, g->key, edit_remove, &s->esn, NULL, NULL, &info);
		if (err) {
			g->stats.lease_errors++;
			log_warnx("poison: shard '%s': cannot clear the count in the lease: %s", g->key,
				  kl_errinfo_format(err, &info, buf, sizeof(buf)));
		}
	}
	if (g->slot)
		poison_slot_ahead_done(g->slot);
}

static void guard_after(void *ctx, const struct kl_transform_record *rec)
{
	struct poison_guard *g = ctx;

	(void)rec;
	if (g->slot)
		poison_slot_leave(g->slot);
	if (g->trying >= 0)
		guard_passed(g);
}

static const struct consumer_guard_ops guard_ops = {
	.before = guard_before,
	.after = guard_after,
};

void poison_guard_consumer(struct poison_guard *g, struct consumer_guard *ret)
{
	ret->ops = &guard_ops;
	ret->ctx = g;
}

void poison_guard_get_stats(const struct poison_guard *g, struct poison_guard_stats *ret)
{
	*ret = g->stats;
}

void poison_guard_free(struct poison_guard *g)
{
	if (!g)
		return;
	if (g->slot)
		poison_marks_release(g->marks, g->slot);
	free(g->sus);
	free(g->key);
	free(g->worker_id);
	free(g);
}

enum kl_err poison_guard_new(const struct poison_guard_config *cfg, struct poison_guard **ret,
			     struct kl_errinfo *info)
{
	struct poison_guard *g;

	if (!cfg || !cfg->key || !*cfg->key || !cfg->worker_id || !*cfg->worker_id ||
	    !cfg->max_crashes || !cfg->journal)
		return kl_errinfo_set(info, KL_EINVAL, "poison: incomplete guard configuration");
	g = calloc(1, sizeof(*g));
	if (!g || !(g->key = strdup(cfg->key)) || !(g->worker_id = strdup(cfg->worker_id))) {
		poison_guard_free(g);
		return kl_errinfo_set(info, KL_ENOMEM, "poison: out of memory");
	}
	g->max_crashes = cfg->max_crashes;
	g->journal = cfg->journal;
	g->store = cfg->store;
	g->marks = cfg->marks;
	g->checkpoint = cfg->checkpoint;
	g->trying = -1;
	if (g->marks) {
		struct kl_errinfo ci;

		kl_errinfo_clear(&ci);
		if (poison_marks_claim(g->marks, g->key, &g->slot, &ci) != KL_OK) {
			g->slot = NULL;
			log_warnx("%s: a crash on shard '%s' will not be counted", ci.message, g->key);
		}
	}
	*ret = g;
	return KL_OK;
}
