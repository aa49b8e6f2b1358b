/* SPDX-License-Identifier: Apache-2.0 */
/*
 * demo.c: `kinlake demo produce`: writes realistic website clickstream to a
 * Kinesis stream, paced, batched, optionally KPL-aggregated, retried
 * without duplicates and without breaking per-key order (see demo.h for
 * the invariants). Three parts: the event generator (pure, seeded), the
 * send queue (pure apart from MD5: it forms batches and applies results),
 * and the command that drives both against the Kinesis client.
 */
#include "config.h"

#include <errno.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/evp.h>

#include "aws.h"
#include "cfg.h"
#include "creds.h"
#include "demo.h"
#include "http.h"
#include "kinesis.h"
#include "kpl.h"
#include "util.h"

/* ======================================================== generator data */

#define SITE "https://www.quickdrop.example"
#define TITLE_SUFFIX " \xC2\xB7 QuickDrop"          /* " · QuickDrop" in UTF-8 */
#define TITLE_SUFFIX_LATIN1 " \xB7 QuickDrop"       /* the same in Latin-1: invalid UTF-8 */

struct item {
	const char *id;
	const char *slug;
	const char *title;
	unsigned cents;
};

/* A restaurant menu and the parcel shop, all under /menu/. */
static const struct item items[] = {
	{ "m-1001", "margherita", "Pizza Margherita", 950 },
	{ "m-1002", "pepperoni", "Pepperoni Pizza", 1150 },
	{ "m-1003", "pad-thai", "Pad Thai", 1290 },
	{ "m-1004", "salmon-nigiri", "Salmon Nigiri (8 pcs)", 1490 },
	{ "m-1005", "doener-teller", "D\xC3\xB6ner Teller", 1090 },
	{ "m-1006", "falafel-wrap", "Falafel Wrap", 790 },
	{ "m-1007", "caesar-salad", "Caesar Salad", 890 },
	{ "m-1008", "tonkotsu-ramen", "Tonkotsu Ramen", 1390 },
	{ "m-1009", "creme-brulee", "Cr\xC3\xA8me br\xC3\xBBl\xC3\xA9" "e", 590 },
	{ "m-1010", "cheeseburger", "Cheeseburger & Fries", 1250 },
	{ "m-1011", "green-curry", "Thai Green Curry", 1190 },
	{ "m-1012", "tiramisu", "Tiramis\xC3\xB9", 650 },
	{ "s-2001", "shipping-box-m", "Shipping box M (5 pcs)", 699 },
	{ "s-2002", "bubble-wrap", "Bubble wrap 10 m", 499 },
	{ "s-2003", "label-printer", "Thermal label printer", 8999 },
	{ "s-2004", "packing-tape", "Packing tape (3 rolls)", 649 },
	{ "s-2005", "gift-card-25", "Gift card \xE2\x82\xAC" "25", 2500 },
};

static const char *const queries[] = {
	"pizza", "sushi near me", "pad thai", "cr\xC3\xA8me br\xC3\xBBl\xC3\xA9" "e", "d\xC3\xB6ner",
	"\xE5\xAF\xBF\xE5\x8F\xB8", "vegan", "parcel locker", "opening hours", "return label",
	"gift card", "gluten free pizza", "delivery time", "ramen", "\"free delivery\"",
};

static const char *const click_targets[] = {
	"promo-banner", "filter-vegan", "sort-price", "reschedule-delivery", "delivery-to-locker",
	"notify-me", "app-download", "newsletter-signup",
};

static const char *const ext_referrers[] = {
	"https://www.google.com/", "https://www.google.com/", "https://www.google.de/",
	"https://www.bing.com/", "https://duckduckgo.com/", "https://www.instagram.com/",
	"https://m.facebook.com/", "android-app://com.google.android.gm/", "", "",
};

enum device { DEV_MOBILE = 0, DEV_DESKTOP, DEV_TABLET, DEV_BOT };
static const char *const device_names[] = { "mobile", "desktop", "tablet", "bot" };

struct agent {
	enum device device;
	const char *ua;
};

/* Real browsers: none contains "bot", "crawler", "spider", "slurp" or
 * "headless" (test_demo checks it). */
static const struct agent browsers[] = {
	{ DEV_MOBILE, "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 "
		      "(KHTML, like Gecko) Version/17.4 Mobile/15E148 Safari/604.1" },
	{ DEV_MOBILE, "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like "
		      "Gecko) Chrome/124.0.6367.82 Mobile Safari/537.36" },
	{ DEV_MOBILE, "Mozilla/5.0 (Linux; Android 13; SM-S911B) AppleWebKit/537.36 (KHTML, like "
		      "Gecko) SamsungBrowser/24.0 Chrome/117.0.0.0 Mobile Safari/537.36" },
	{ DEV_MOBILE, "Mozilla/5.0 (iPhone; CPU iPhone OS 16_6 like Mac OS X) AppleWebKit/605.1.15 "
		      "(KHTML, like Gecko) CriOS/124.0.6367.88 Mobile/15E148 Safari/604.1" },
	{ DEV_MOBILE, "Mozilla/5.0 (Linux; Android 12; moto g(60)) AppleWebKit/537.36 (KHTML, like "
		      "Gecko) Chrome/123.0.6312.118 Mobile Safari/537.36" },
	{ DEV_DESKTOP, "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like "
		       "Gecko) Chrome/124.0.0.0 Safari/537.36" },
	{ DEV_DESKTOP, "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:125.0) Gecko/20100101 "
		       "Firefox/125.0" },
	{ DEV_DESKTOP, "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, "
		       "like Gecko) Version/17.4.1 Safari/605.1.15" },
	{ DEV_DESKTOP, "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like "
		       "Gecko) Chrome/124.0.0.0 Safari/537.36 Edg/124.0.2478.67" },
	{ DEV_DESKTOP, "Mozilla/5.0 (X11; Linux x86_64; rv:125.0) Gecko/20100101 Firefox/125.0" },
	{ DEV_TABLET, "Mozilla/5.0 (iPad; CPU OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, "
		      "like Gecko) Version/17.4 Mobile/15E148 Safari/604.1" },
	{ DEV_TABLET, "Mozilla/5.0 (Linux; Android 13; SM-X710) AppleWebKit/537.36 (KHTML, like "
		      "Gecko) Chrome/124.0.0.0 Safari/537.36" },
};

/* Crawlers: each contains one of the clickstream plugin's default bot patterns. */
static const char *const bot_agents[] = {
	"Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
	"Mozilla/5.0 (Linux; Android 6.0.1; Nexus 5X Build/MMB29P) AppleWebKit/537.36 (KHTML, like "
	"Gecko) Chrome/124.0.6367.91 Mobile Safari/537.36 (compatible; Googlebot/2.1; "
	"+http://www.google.com/bot.html)",
	"Mozilla/5.0 (compatible; bingbot/2.0; +http://www.bing.com/bingbot.htm)",
	"Mozilla/5.0 (compatible; YandexBot/3.0; +http://yandex.com/bots)",
	"Mozilla/5.0 (compatible; AhrefsBot/7.0; +http://ahrefs.com/robot/)",
	"Mozilla/5.0 (compatible; SemrushBot/7~bl; +http://www.semrush.com/bot.html)",
	"Mozilla/5.0 (compatible; Baiduspider/2.0; +http://www.baidu.com/search/spider.html)",
	"Mozilla/5.0 (compatible; Yahoo! Slurp; http://help.yahoo.com/help/us/ysearch/slurp)",
	"DuckDuckBot/1.1; (+http://duckduckgo.com/duckduckbot.html)",
	"Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
	"HeadlessChrome/124.0.0.0 Safari/537.36",
	"linkcheck-crawler/2.3 (+https://www.quickdrop.example/crawler)",
};

/* Pages a crawler walks through (besides the menu items). */
static const char *const crawl_pages[] = {
	"/", "/menu", "/track", "/help/returns", "/help/delivery-times", "/about", "/careers",
	"/sitemap.xml",
};

struct country {
	const char *code;
	unsigned weight;
};

static const struct country countries[] = {
	{ "DE", 30 }, { "NL", 12 }, { "FR", 10 }, { "GB", 10 }, { "PL", 8 }, { "AT", 6 },
	{ "BE", 6 }, { "US", 6 }, { "ES", 5 }, { "IT", 4 }, { "CH", 3 },
};

/* ======================================================== generator */

enum intent { INTENT_TRACK = 0, INTENT_ORDER, INTENT_BROWSE, INTENT_CRAWL };

/* One visitor session; its id is the partition key. */
struct session {
	bool live;
	uint8_t intent;
	uint8_t phase;
	uint8_t remaining;            /* events (track, browse, crawl) or items (order) left */
	uint8_t agent;                /* index into browsers[] or bot_agents[] */
	uint8_t country;
	uint8_t ext_referrer;
	uint8_t cart_items;
	uint16_t item;                /* the item being looked at */
	uint32_t cart_cents;
	uint64_t seq;
	char id[DEMO_KEY_MAX];
	char user[24];
	char parcel[20];
	char page[160];               /* last page, for the next referrer; "" at entry */
	char title[160];              /* its title, for clicks on it */
};

struct demo_gen {
	uint64_t seed;
	struct demo_gen_opts opts;
	struct kl_rng rng;
	uint64_t next_n;
	uint64_t malformed_threshold; /* out of 2^32 */
	uint64_t bot_threshold;
	struct session *sessions;
	struct buf scratch;
	uint64_t counts[DEMO_KIND_COUNT];
};

/* What one step of a session does. */
struct step {
	const char *action;
	char page[160];
	char title[160];
	const struct item *item;      /* view of an item, add_to_cart */
	unsigned qty;
	const char *query;            /* search */
	const char *target;           /* click */
	bool parcel;                  /* track_parcel: parcel_id */
	bool purchase;
};

const char *demo_kind_name(enum demo_kind kind)
{
	switch (kind) {
	case DEMO_KIND_OK:
		return "ok";
	case DEMO_KIND_BOT:
		return "bot";
	case DEMO_KIND_TRUNCATED:
		return "truncated";
	case DEMO_KIND_NOT_JSON:
		return "not-json";
	case DEMO_KIND_MISSING_FIELDS:
		return "missing-fields";
	case DEMO_KIND_BAD_UTF8:
		return "bad-utf8";
	}
	return "?";
}

bool demo_kind_malformed(enum demo_kind kind)
{
	return kind != DEMO_KIND_OK && kind != DEMO_KIND_BOT;
}

void demo_gen_opts_default(struct demo_gen_opts *o)
{
	memset(o, 0, sizeof(*o));
	o->malformed_pct = DEMO_DEFAULT_MALFORMED_PCT;
	o->bot_pct = DEMO_DEFAULT_BOT_PCT;
	o->sessions = DEMO_DEFAULT_SESSIONS;
}

static uint64_t pct_threshold(double pct)
{
	return (uint64_t)(pct / 100.0 * 4294967296.0 + 0.5);
}

enum kl_err demo_gen_new(uint64_t seed, const struct demo_gen_opts *opts,
			 struct demo_gen **ret_gen)
{
	struct demo_gen_opts def;
	struct demo_gen *g;

	if (!opts) {
		demo_gen_opts_default(&def);
		opts = &def;
	}
	if (!(opts->malformed_pct >= 0 && opts->malformed_pct <= 100) ||
	    !(opts->bot_pct >= 0 && opts->bot_pct <= 100) || opts->sessions < 1 ||
	    opts->sessions > DEMO_SESSIONS_MAX)
		return KL_EINVAL;
	g = calloc(1, sizeof(*g));
	if (!g)
		return KL_ENOMEM;
	g->sessions = calloc(opts->sessions, sizeof(*g->sessions));
	if (!g->sessions) {
		free(g);
		return KL_ENOMEM;
	}
	g->seed = seed;
	g->opts = *opts;
	g->next_n = opts->first_id;
	g->malformed_threshold = pct_threshold(opts->malformed_pct);
	g->bot_threshold = pct_threshold(opts->bot_pct);
	/* Other --ids-from values must not reuse session ids (their seq would
	 * restart), so the id offset goes into the random state. */
	kl_rng_seed_value(&g->rng, seed ^ (opts->first_id * 0x9E3779B97F4A7C15ULL));
	buf_init(&g->scratch, DEMO_EVENT_MAX * 2);
	*ret_gen = g;
	return KL_OK;
}

void demo_gen_free(struct demo_gen *gen)
{
	if (!gen)
		return;
	buf_done(&gen->scratch);
	free(gen->sessions);
	free(gen);
}

const uint64_t *demo_gen_counts(const struct demo_gen *gen)
{
	return gen->counts;
}

static unsigned below(struct demo_gen *g, unsigned bound)
{
	return (unsigned)kl_rng_below(&g->rng, bound);
}

/* True with probability threshold / 2^32. */
static bool chance32(struct demo_gen *g, uint64_t threshold)
{
	return (kl_rng_next(&g->rng) >> 32) < threshold;
}

/* True with probability pct percent. */
static bool chance(struct demo_gen *g, unsigned pct)
{
	return below(g, 100) < pct;
}

static void session_start(struct demo_gen *g, struct session *s)
{
	uint64_t a = kl_rng_next(&g->rng), b = kl_rng_next(&g->rng);
	unsigned w = 0, pick;
	bool bot = chance32(g, g->bot_threshold);

	memset(s, 0, sizeof(*s));
	s->live = true;
	/* A version-4 UUID, like a session cookie. */
	snprintf(s->id, sizeof(s->id), "%08" PRIx32 "-%04" PRIx32 "-4%03" PRIx32 "-%04" PRIx32
		 "-%012" PRIx64, (uint32_t)(a >> 32), (uint32_t)(a >> 16) & 0xffff,
		 (uint32_t)a & 0xfff, (uint32_t)(0x8000 | ((b >> 48) & 0x3fff)),
		 b & UINT64_C(0xffffffffffff));
	if (chance(g, 60))
		snprintf(s->user, sizeof(s->user), "c-%07u", below(g, 500000));
	else
		snprintf(s->user, sizeof(s->user), "a-%012" PRIx64,
			 kl_rng_next(&g->rng) & UINT64_C(0xffffffffffff));
	for (size_t i = 0; i < KL_ARRAY_LEN(countries); i++)
		w += countries[i].weight;
	pick = below(g, w);
	for (size_t i = 0; i < KL_ARRAY_LEN(countries); i++) {
		if (pick < countries[i].weight) {
			s->country = (uint8_t)i;
			break;
		}
		pick -= countries[i].weight;
	}
	s->ext_referrer = (uint8_t)below(g, KL_ARRAY_LEN(ext_referrers));
	s->item = (uint16_t)below(g, KL_ARRAY_LEN(items));
	snprintf(s->parcel, sizeof(s->parcel), "QD%010u%s", below(g, 1000000000u),
		 countries[s->country].code);
	if (bot) {
		s->intent = INTENT_CRAWL;
		s->agent = (uint8_t)below(g, KL_ARRAY_LEN(bot_agents));
		/* As long as a visitor's session on average (about 5 events),
		 * so --bot-pct is also the share of events. */
		s->remaining = (uint8_t)(1 + below(g, 7));
		s->country = 7; /* US */
		return;
	}
	/* mobile 58 %, desktop 34 %, tablet 8 % */
	pick = below(g, 100);
	if (pick < 58)
		s->agent = (uint8_t)below(g, 5);
	else if (pick < 92)
		s->agent = (uint8_t)(5 + below(g, 5));
	else
		s->agent = (uint8_t)(10 + below(g, 2));
	pick = below(g, 100);
	if (pick < 40) {
		s->intent = INTENT_TRACK;
		s->remaining = (uint8_t)(1 + below(g, 4));
		/* Many come straight from the "your parcel is on its way" mail. */
		s->phase = chance(g, 40) ? 1 : 0;
	} else if (pick < 75) {
		s->intent = INTENT_ORDER;
		s->remaining = (uint8_t)(1 + below(g, 3));
	} else {
		s->intent = INTENT_BROWSE;
		s->remaining = (uint8_t)(1 + below(g, 6));
	}
}

/* Appends s percent-encoded for a query string (space as '+'). */
static void url_encode(char *out, size_t size, const char *s)
{
	static const char hex[] = "0123456789ABCDEF";
	size_t o = 0;

	for (; *s && o + 4 < size; s++) {
		unsigned char c = (unsigned char)*s;

		if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
		    c == '-' || c == '_' || c == '.' || c == '~') {
			out[o++] = (char)c;
		} else if (c == ' ') {
			out[o++] = '+';
		} else {
			out[o++] = '%';
			out[o++] = hex[c >> 4];
			out[o++] = hex[c & 15];
		}
	}
	out[o] = '\0';
}

static void step_view_item(struct step *st, const struct item *it)
{
	st->action = "view";
	st->item = it;
	snprintf(st->page, sizeof(st->page), "/menu/%s", it->slug);
	snprintf(st->title, sizeof(st->title), "%s", it->title);
}

static void step_search(struct demo_gen *g, struct step *st)
{
	char enc[128];

	st->action = "search";
	st->query = queries[below(g, KL_ARRAY_LEN(queries))];
	url_encode(enc, sizeof(enc), st->query);
	snprintf(st->page, sizeof(st->page), "/search?q=%s", enc);
	snprintf(st->title, sizeof(st->title), "Search results for %s", st->query);
}

static void step_click(struct demo_gen *g, const struct session *s, struct step *st)
{
	st->action = "click";
	st->target = click_targets[below(g, KL_ARRAY_LEN(click_targets))];
	snprintf(st->page, sizeof(st->page), "%s", s->page[0] ? s->page : "/");
	snprintf(st->title, sizeof(st->title), "%s", s->page[0] ? s->title : "Home");
}

/* Decides the next event of s and advances it; s->live goes false after
 * its last event. */
static void session_step(struct demo_gen *g, struct session *s, struct step *st)
{
	memset(st, 0, sizeof(*st));
	switch ((enum intent)s->intent) {
	case INTENT_TRACK:
		if (s->phase == 0) {
			st->action = "view";
			snprintf(st->page, sizeof(st->page), "/");
			snprintf(st->title, sizeof(st->title), "Parcels & food delivery");
			s->phase = 1;
			return;
		}
		snprintf(st->page, sizeof(st->page), "/track/%s", s->parcel);
		snprintf(st->title, sizeof(st->title), "Track parcel %s", s->parcel);
		if (s->phase == 1) {
			st->action = "track_parcel";
			st->parcel = true;
			s->phase = 2;
		} else if (chance(g, 50)) {
			st->action = "view";
			st->parcel = true;
		} else {
			st->action = "click";
			st->parcel = true;
			st->target = click_targets[3 + below(g, 3)];
		}
		if (s->phase == 2 && s->remaining-- == 0)
			s->live = false;
		return;
	case INTENT_ORDER:
		switch (s->phase) {
		case 0:
			st->action = "view";
			if (chance(g, 50)) {
				snprintf(st->page, sizeof(st->page), "/");
				snprintf(st->title, sizeof(st->title), "Parcels & food delivery");
			} else {
				snprintf(st->page, sizeof(st->page), "/menu");
				snprintf(st->title, sizeof(st->title), "Menu");
			}
			s->phase = 1;
			return;
		case 1:
			s->item = (uint16_t)below(g, KL_ARRAY_LEN(items));
			step_view_item(st, &items[s->item]);
			s->phase = 2;
			return;
		case 2:
			step_view_item(st, &items[s->item]);
			st->action = "add_to_cart";
			st->qty = 1 + (chance(g, 20) ? 1 : 0);
			s->cart_cents += items[s->item].cents * st->qty;
			s->cart_items = (uint8_t)(s->cart_items + st->qty);
			s->phase = --s->remaining > 0 ? 1 : 3;
			return;
		case 3:
			st->action = "view";
			snprintf(st->page, sizeof(st->page), "/cart");
			snprintf(st->title, sizeof(st->title), "Cart");
			s->phase = 4;
			if (chance(g, 20))
				s->live = false; /* abandoned cart */
			return;
		case 4:
			st->action = "view";
			snprintf(st->page, sizeof(st->page), "/checkout");
			snprintf(st->title, sizeof(st->title), "Checkout");
			s->phase = 5;
			return;
		default:
			st->action = "purchase";
			st->purchase = true;
			snprintf(st->page, sizeof(st->page), "/checkout");
			snprintf(st->title, sizeof(st->title), "Thank you");
			s->live = false;
			return;
		}
	case INTENT_BROWSE:
		if (s->phase == 0) {
			step_search(g, st);
			s->phase = 1;
		} else {
			unsigned pick = below(g, 100);

			if (pick < 50) {
				s->item = (uint16_t)below(g, KL_ARRAY_LEN(items));
				step_view_item(st, &items[s->item]);
			} else if (pick < 75) {
				step_click(g, s, st);
			} else {
				step_search(g, st);
			}
		}
		if (s->remaining-- == 0)
			s->live = false;
		return;
	case INTENT_CRAWL: {
		unsigned pick = below(g, (unsigned)(KL_ARRAY_LEN(crawl_pages) + KL_ARRAY_LEN(items)));

		if (pick < KL_ARRAY_LEN(crawl_pages)) {
			st->action = "view";
			snprintf(st->page, sizeof(st->page), "%s", crawl_pages[pick]);
			snprintf(st->title, sizeof(st->title), "%s", crawl_pages[pick]);
		} else {
			step_view_item(st, &items[pick - KL_ARRAY_LEN(crawl_pages)]);
		}
		if (s->remaining-- == 0)
			s->live = false;
		return;
	}
	}
}

/* Appends s as the body of a JSON string (without quotes). Bytes >= 0x80
 * pass through: they are UTF-8 (or deliberately not). */
static void json_str(struct buf *b, const char *s)
{
	for (; *s; s++) {
		unsigned char c = (unsigned char)*s;

		if (c == '"' || c == '\\') {
			buf_append_byte(b, '\\');
			buf_append_byte(b, c);
		} else if (c < 0x20) {
			buf_printf(b, "\\u%04x", c);
		} else {
			buf_append_byte(b, c);
		}
	}
}

static void json_field(struct buf *b, const char *name, const char *value)
{
	buf_printf(b, ",\"%s\":\"", name);
	json_str(b, value);
	buf_append_byte(b, '"');
}

#define ISO_TIME_SIZE 64

static void iso_time(int64_t ms, char out[ISO_TIME_SIZE])
{
	time_t secs = (time_t)(ms / 1000);
	struct tm tm;

	if (ms < 0 || !gmtime_r(&secs, &tm)) {
		snprintf(out, ISO_TIME_SIZE, "1970-01-01T00:00:00.000Z");
		return;
	}
	snprintf(out, ISO_TIME_SIZE, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900, tm.tm_mon + 1,
		 tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, (int)(ms % 1000));
}

enum kl_err demo_gen_event(struct demo_gen *gen, int64_t now_ms, struct buf *out,
			   struct demo_event *ret_event)
{
	struct buf *b = &gen->scratch;
	struct demo_event ev;
	struct session *s;
	struct step st;
	char ts[ISO_TIME_SIZE], order[24];
	const char *ua;
	enum device dev;
	size_t cut = 0, keep;
	bool malformed;

	/* Everything below fits; fail before any state changes. */
	if (buf_reserve(out, DEMO_EVENT_MAX) != KL_OK)
		return KL_ENOMEM;

	s = &gen->sessions[below(gen, gen->opts.sessions)];
	if (!s->live)
		session_start(gen, s);
	session_step(gen, s, &st);
	malformed = chance32(gen, gen->malformed_threshold);
	memset(&ev, 0, sizeof(ev));
	ev.n = gen->next_n++;
	snprintf(ev.event_id, sizeof(ev.event_id), "%" PRIu64 "-%" PRIu64, gen->seed, ev.n);
	snprintf(ev.partition_key, sizeof(ev.partition_key), "%s", s->id);
	ev.seq = ++s->seq;
	ev.kind = s->intent == INTENT_CRAWL ? DEMO_KIND_BOT : DEMO_KIND_OK;
	if (malformed) {
		/* A bot's event without user_id would be dropped as a bot before
		 * any field is checked, so bots get only the parse errors. */
		static const enum demo_kind human[] = { DEMO_KIND_TRUNCATED, DEMO_KIND_NOT_JSON,
							DEMO_KIND_MISSING_FIELDS,
							DEMO_KIND_BAD_UTF8 };
		static const enum demo_kind bot[] = { DEMO_KIND_TRUNCATED, DEMO_KIND_NOT_JSON,
						      DEMO_KIND_BAD_UTF8 };

		ev.kind = ev.kind == DEMO_KIND_BOT ? bot[below(gen, 3)] : human[below(gen, 4)];
	}
	/* Drawn for every event so the sequence of draws never depends on
	 * now_ms or on the kind. */
	cut = below(gen, 1u << 30);
	snprintf(order, sizeof(order), "o-%010u", below(gen, 4000000000u));
	iso_time(now_ms - (int64_t)below(gen, 1500), ts);

	if (s->intent == INTENT_CRAWL) {
		ua = bot_agents[s->agent];
		dev = DEV_BOT;
	} else {
		ua = browsers[s->agent].ua;
		dev = browsers[s->agent].device;
	}

	buf_reset(b);
	if (ev.kind == DEMO_KIND_NOT_JSON) {
		/* A proxy's log line that ended up in the stream. */
		buf_printf(b, "beacon-proxy[%u]: WARN upstream 502 for beacon \"event_id\":\"%s\" "
			      "session=%s seq=%" PRIu64 " path=%s ts=%s ua=\"%s\"",
			   1000 + (unsigned)(cut % 30000), ev.event_id, ev.partition_key, ev.seq,
			   st.page, ts, ua);
		goto emit;
	}
	buf_printf(b, "{\"event_id\":\"%s\",\"seq\":%" PRIu64 ",\"session_id\":\"%s\"", ev.event_id,
		   ev.seq, ev.partition_key);
	keep = b->len;   /* a truncated event keeps at least this much */
	json_field(b, "ts", ts);
	if (ev.kind != DEMO_KIND_MISSING_FIELDS) {
		json_field(b, "user_id", s->user);
		json_field(b, "action", st.action);
	}
	json_field(b, "page", st.page);
	buf_append_str(b, ",\"page_title\":\"");
	json_str(b, st.title);
	buf_append_str(b, ev.kind == DEMO_KIND_BAD_UTF8 ? TITLE_SUFFIX_LATIN1 : TITLE_SUFFIX);
	buf_append_byte(b, '"');
	if (st.item) {
		json_field(b, "item_id", st.item->id);
		buf_printf(b, ",\"price\":%u.%02u", st.item->cents / 100, st.item->cents % 100);
		json_field(b, "currency", "EUR");
	}
	if (st.qty)
		buf_printf(b, ",\"qty\":%u", st.qty);
	if (st.query)
		json_field(b, "query", st.query);
	if (st.target)
		json_field(b, "target", st.target);
	if (st.parcel)
		json_field(b, "parcel_id", s->parcel);
	if (st.purchase) {
		json_field(b, "order_id", order);
		buf_printf(b, ",\"items\":%u,\"total\":%" PRIu32 ".%02" PRIu32, s->cart_items,
			   s->cart_cents / 100, s->cart_cents % 100);
		json_field(b, "currency", "EUR");
	}
	if (s->page[0]) {
		char ref[sizeof(s->page) + sizeof(SITE)];

		snprintf(ref, sizeof(ref), SITE "%s", s->page);
		json_field(b, "referrer", ref);
	} else {
		json_field(b, "referrer", s->intent == INTENT_CRAWL ? "" :
			   ext_referrers[s->ext_referrer]);
	}
	json_field(b, "user_agent", ua);
	json_field(b, "device", device_names[dev]);
	json_field(b, "country", countries[s->country].code);
	buf_append_byte(b, '}');
	if (ev.kind == DEMO_KIND_TRUNCATED) {
		/* Cut somewhere after the ids, always before the closing brace
		 * (a proxy that lost the end of the body). */
		b->len = keep + cut % (b->len - 1 - keep);
		b->data[b->len] = '\0';
	}
emit:
	snprintf(s->page, sizeof(s->page), "%s", st.page);
	snprintf(s->title, sizeof(s->title), "%s", st.title);
	if (b->len > DEMO_EVENT_MAX)
		b->len = DEMO_EVENT_MAX;  /* cannot happen with the tables above */
	buf_append(out, b->data, b->len);
	gen->counts[ev.kind]++;
	*ret_event = ev;
	return KL_OK;
}

/* ======================================================== send queue */

/* One queued user record; data follows the struct. */
struct qrec {
	struct demo_event ev;
	struct kpl_u128 hash;         /* MD5 of the partition key (KPL mode) */
	uint32_t key_hash;            /* for the batch's key table */
	bool acked;
	struct qrec *next_in_unit;
	size_t len;
	uint8_t data[];
};

/* One Kinesis record of the current batch. */
struct unit {
	struct qrec *head, *tail;
	size_t n;                     /* user records */
	size_t est;                   /* upper bound of its encoded size */
	int shard;                    /* routing shard index (KPL), -1 plain */
	bool closed;
	char shard_id[KINESIS_SHARD_ID_MAX + 1]; /* where it was routed (KPL) */
	struct buf agg;               /* the aggregate's bytes (KPL, n > 1) */
};

struct qshard {
	char id[KINESIS_SHARD_ID_MAX + 1];
	struct kpl_hash_range range;
	bool open;
	int open_unit;                /* during take: the shard's unit still filling, -1 */
};

#define KEY_BLOCKED (-2)

struct kslot {
	const char *key;
	uint32_t hash;
	uint32_t gen;
	int state;                    /* unit index, or KEY_BLOCKED */
};

struct demo_queue {
	struct demo_queue_opts opts;
	bool kpl;
	struct qrec **recs;           /* oldest first */
	size_t n;
	struct kslot *slots;
	size_t nslots;                /* power of two, > 2 * max_records */
	uint32_t slot_gen;
	struct qshard *shards;
	size_t nshards;
	bool have_shards;
	struct unit units[KINESIS_PUT_RECORDS_MAX];
	size_t nunits;
	bool batch_out;               /* taken and not yet settled */
	struct kinesis_put_entry entries[KINESIS_PUT_RECORDS_MAX];
	struct kpl_enc_record *enc;   /* kpl_per_record entries */
	EVP_MD_CTX *md_ctx;
	EVP_MD *md5;
};

/* Upper bounds of the protobuf overhead in an aggregate: a Record message
 * (tag, length, key index field, data tag and length) and a key-table
 * entry (tag, length); plus magic and digest. */
#define AGG_RECORD_OVERHEAD 18
#define AGG_KEY_OVERHEAD 6
#define AGG_FRAME (KPL_MAGIC_LEN + KPL_DIGEST_LEN)

static uint32_t fnv1a(const char *s)
{
	uint32_t h = 2166136261u;

	for (; *s; s++)
		h = (h ^ (uint8_t)*s) * 16777619u;
	return h;
}

enum kl_err demo_queue_new(const struct demo_queue_opts *opts, struct demo_queue **ret_q)
{
	struct demo_queue *q;
	size_t per_record;

	if (opts->kpl_per_record > DEMO_KPL_MAX_PER_RECORD ||
	    opts->kpl_max_bytes > KINESIS_RECORD_DATA_MAX ||
	    (opts->kpl_max_bytes && opts->kpl_max_bytes < DEMO_EVENT_MAX + 512) ||
	    opts->max_records > (size_t)1 << 26)
		return KL_EINVAL;
	q = calloc(1, sizeof(*q));
	if (!q)
		return KL_ENOMEM;
	q->opts = *opts;
	if (!q->opts.max_records)
		q->opts.max_records = DEMO_QUEUE_DEFAULT_MAX;
	if (!q->opts.kpl_max_bytes)
		q->opts.kpl_max_bytes = DEMO_KPL_DEFAULT_MAX_BYTES;
	q->kpl = q->opts.kpl_per_record > 1;
	per_record = q->kpl ? q->opts.kpl_per_record : 1;
	q->recs = calloc(q->opts.max_records, sizeof(*q->recs));
	for (q->nslots = 64; q->nslots <= 2 * q->opts.max_records; q->nslots *= 2)
		;
	q->slots = calloc(q->nslots, sizeof(*q->slots));
	q->enc = calloc(per_record, sizeof(*q->enc));
	for (size_t i = 0; i < KINESIS_PUT_RECORDS_MAX; i++)
		buf_init(&q->units[i].agg, KINESIS_RECORD_DATA_MAX);
	if (!q->recs || !q->slots || !q->enc) {
		demo_queue_free(q);
		return KL_ENOMEM;
	}
	if (q->kpl) {
		uint8_t digest[EVP_MAX_MD_SIZE];
		unsigned dlen = 0;

		q->md_ctx = EVP_MD_CTX_new();
		q->md5 = EVP_MD_fetch(NULL, "MD5", NULL);
		if (!q->md_ctx || !q->md5 || EVP_DigestInit_ex(q->md_ctx, q->md5, NULL) != 1 ||
		    EVP_DigestFinal_ex(q->md_ctx, digest, &dlen) != 1) {
			demo_queue_free(q);
			return KL_ESTATE;
		}
	}
	q->slot_gen = 1;
	*ret_q = q;
	return KL_OK;
}

void demo_queue_free(struct demo_queue *q)
{
	if (!q)
		return;
	for (size_t i = 0; q->recs && i < q->n; i++)
		free(q->recs[i]);
	for (size_t i = 0; i < KINESIS_PUT_RECORDS_MAX; i++)
		buf_done(&q->units[i].agg);
	free(q->recs);
	free(q->slots);
	free(q->enc);
	free(q->shards);
	EVP_MD_CTX_free(q->md_ctx);
	EVP_MD_free(q->md5);
	free(q);
}

static int shard_start_cmp(const void *a, const void *b)
{
	const struct qshard *x = a, *y = b;

	if (x->open != y->open)
		return x->open ? -1 : 1;
	return kpl_u128_cmp(x->range.start, y->range.start);
}

enum kl_err demo_queue_set_shards(struct demo_queue *q, const struct kinesis_shard *shards,
				  size_t n)
{
	struct qshard *v;
	struct kpl_u128 next = { 0, 0 };
	size_t nopen = 0;
	bool covered = true, wrapped = false;

	v = calloc(n ? n : 1, sizeof(*v));
	if (!v)
		return KL_ENOMEM;
	for (size_t i = 0; i < n; i++) {
		snprintf(v[i].id, sizeof(v[i].id), "%s", shards[i].shard_id);
		if (kpl_hash_range_parse(shards[i].starting_hash_key, shards[i].ending_hash_key, NULL,
					 &v[i].range) != KL_OK) {
			free(v);
			return KL_EINVAL;
		}
		v[i].open = !kinesis_shard_is_closed(&shards[i]);
		nopen += v[i].open;
	}
	/* Open shards first, by starting key: they must tile [0, 2^128 - 1]. */
	qsort(v, n, sizeof(*v), shard_start_cmp);
	for (size_t i = 0; i < nopen && covered; i++) {
		if (wrapped || kpl_u128_cmp(v[i].range.start, next) != 0)
			covered = false;
		next = v[i].range.end;
		if (++next.lo == 0 && ++next.hi == 0)
			wrapped = true;
	}
	if (!nopen || !covered || !wrapped) {
		free(v);
		return KL_EINVAL;
	}
	free(q->shards);
	q->shards = v;
	q->nshards = n;
	q->have_shards = true;
	return KL_OK;
}

size_t demo_queue_len(const struct demo_queue *q)
{
	return q->n;
}

enum kl_err demo_queue_add(struct demo_queue *q, const struct demo_event *ev, const void *data,
			   size_t len)
{
	struct qrec *r;

	if (len > (q->kpl ? q->opts.kpl_max_bytes - 512 : KINESIS_RECORD_DATA_MAX) ||
	    !ev->partition_key[0])
		return KL_EINVAL;
	if (q->n >= q->opts.max_records)
		return KL_ENOMEM;
	r = malloc(sizeof(*r) + len);
	if (!r)
		return KL_ENOMEM;
	r->ev = *ev;
	r->key_hash = fnv1a(r->ev.partition_key);
	r->acked = false;
	r->next_in_unit = NULL;
	r->len = len;
	memcpy(r->data, data, len);
	r->hash.hi = r->hash.lo = 0;
	if (q->kpl) {
		uint8_t digest[EVP_MAX_MD_SIZE];
		unsigned dlen = 0;

		if (EVP_DigestInit_ex(q->md_ctx, q->md5, NULL) != 1 ||
		    EVP_DigestUpdate(q->md_ctx, r->ev.partition_key,
				     strlen(r->ev.partition_key)) != 1 ||
		    EVP_DigestFinal_ex(q->md_ctx, digest, &dlen) != 1 || dlen != 16) {
			free(r);
			return KL_ESTATE;
		}
		r->hash = kpl_u128_from_be(digest);
	}
	q->recs[q->n++] = r;
	return KL_OK;
}

/* The batch's entry for key: a slot whose gen is current, or a free one
 * (gen stale) for the caller to fill. */
static struct kslot *slot_for(struct demo_queue *q, const struct qrec *r)
{
	size_t mask = q->nslots - 1, i = r->key_hash & mask;

	for (;; i = (i + 1) & mask) {
		struct kslot *s = &q->slots[i];

		if (s->gen != q->slot_gen)
			return s;
		if (s->hash == r->key_hash && strcmp(s->key, r->ev.partition_key) == 0)
			return s;
	}
}

static int route(const struct demo_queue *q, struct kpl_u128 hash)
{
	for (size_t i = 0; i < q->nshards && q->shards[i].open; i++)
		if (kpl_hash_range_contains(&q->shards[i].range, hash))
			return (int)i;
	return -1;
}

static void unit_add(struct unit *u, struct qrec *r, size_t est)
{
	r->next_in_unit = NULL;
	if (u->tail)
		u->tail->next_in_unit = r;
	else
		u->head = r;
	u->tail = r;
	u->n++;
	u->est += est;
}

enum kl_err demo_queue_take(struct demo_queue *q, size_t max_entries,
			    const struct kinesis_put_entry **ret_entries, size_t *ret_n)
{
	size_t per = q->kpl ? q->opts.kpl_per_record : 1, batch_bytes = 0;

	if (q->batch_out || (q->kpl && !q->have_shards))
		return KL_ESTATE;
	if (max_entries == 0 || max_entries > KINESIS_PUT_RECORDS_MAX)
		max_entries = KINESIS_PUT_RECORDS_MAX;
	if (++q->slot_gen == 0) {
		memset(q->slots, 0, q->nslots * sizeof(*q->slots));
		q->slot_gen = 1;
	}
	for (size_t i = 0; i < q->nshards; i++)
		q->shards[i].open_unit = -1;
	q->nunits = 0;

	for (size_t i = 0; i < q->n; i++) {
		struct qrec *r = q->recs[i];
		struct kslot *slot = slot_for(q, r);
		size_t klen = strlen(r->ev.partition_key);
		struct unit *u = NULL;
		int shard = -1, ui;
		size_t add;

		if (slot->gen == q->slot_gen) {
			/* The key is in the batch already: only more of it into
			 * the same, still open, aggregate. */
			if (slot->state == KEY_BLOCKED)
				continue;
			u = &q->units[slot->state];
			add = r->len + AGG_RECORD_OVERHEAD;
			if (!u->closed && u->n < per && u->est + add <= q->opts.kpl_max_bytes &&
			    batch_bytes + add <= DEMO_BATCH_MAX_BYTES) {
				unit_add(u, r, add);
				batch_bytes += add;
				if (u->n == per) {
					u->closed = true;
					if (u->shard >= 0)
						q->shards[u->shard].open_unit = -1;
				}
			} else {
				slot->state = KEY_BLOCKED;
			}
			continue;
		}
		slot->gen = q->slot_gen;
		slot->key = r->ev.partition_key;
		slot->hash = r->key_hash;
		slot->state = KEY_BLOCKED;
		if (q->kpl) {
			shard = route(q, r->hash);
			if (shard < 0)
				return KL_ESTATE; /* set_shards checked coverage */
			ui = q->shards[shard].open_unit;
			add = r->len + AGG_RECORD_OVERHEAD + klen + AGG_KEY_OVERHEAD;
			if (ui >= 0) {
				u = &q->units[ui];
				if (u->n < per && u->est + add <= q->opts.kpl_max_bytes &&
				    batch_bytes + add <= DEMO_BATCH_MAX_BYTES) {
					unit_add(u, r, add);
					batch_bytes += add;
					slot->state = ui;
					if (u->n == per) {
						u->closed = true;
						q->shards[shard].open_unit = -1;
					}
					continue;
				}
				u->closed = true;
				q->shards[shard].open_unit = -1;
			}
			add += AGG_FRAME + klen; /* the outer partition key */
		} else {
			add = r->len + klen;
		}
		if (q->nunits == max_entries || batch_bytes + add > DEMO_BATCH_MAX_BYTES)
			continue; /* the key stays blocked for this batch */
		ui = (int)q->nunits++;
		u = &q->units[ui];
		u->head = u->tail = NULL;
		u->n = 0;
		u->est = 0;
		u->shard = shard;
		u->closed = per == 1;
		u->shard_id[0] = '\0';
		if (shard >= 0) {
			snprintf(u->shard_id, sizeof(u->shard_id), "%s", q->shards[shard].id);
			if (!u->closed)
				q->shards[shard].open_unit = ui;
		}
		unit_add(u, r, add);
		batch_bytes += add;
		slot->state = ui;
	}

	for (size_t i = 0; i < q->nunits; i++) {
		struct unit *u = &q->units[i];
		struct kinesis_put_entry *e = &q->entries[i];
		size_t k = 0;

		memset(e, 0, sizeof(*e));
		e->partition_key = u->head->ev.partition_key;
		if (u->n == 1) {
			/* Like the KPL, a lone record goes unaggregated. */
			e->data = u->head->data;
			e->data_len = u->head->len;
			continue;
		}
		for (struct qrec *r = u->head; r; r = r->next_in_unit, k++) {
			q->enc[k].partition_key = r->ev.partition_key;
			q->enc[k].explicit_hash_key = NULL;
			q->enc[k].data = r->data;
			q->enc[k].len = r->len;
		}
		buf_reset(&u->agg);
		if (kpl_encode(q->enc, u->n, &u->agg) != KL_OK) {
			q->nunits = 0;
			return KL_ENOMEM;
		}
		/* The estimate is an upper bound by construction. */
		if (u->agg.len > u->est || u->agg.len > KINESIS_RECORD_DATA_MAX) {
			q->nunits = 0;
			return KL_ESTATE;
		}
		e->data = u->agg.data;
		e->data_len = u->agg.len;
	}
	q->batch_out = q->nunits > 0;
	*ret_entries = q->entries;
	*ret_n = q->nunits;
	return KL_OK;
}

static const struct qshard *shard_by_id(const struct demo_queue *q, const char *id)
{
	for (size_t i = 0; i < q->nshards; i++)
		if (strcmp(q->shards[i].id, id) == 0)
			return &q->shards[i];
	return NULL;
}

bool demo_queue_misrouted(const struct demo_queue *q, const struct kinesis_put_results *res)
{
	if (!q->batch_out || !q->kpl || !res || res->n != q->nunits)
		return false;
	for (size_t i = 0; i < q->nunits; i++)
		if (q->units[i].n > 1 && !res->r[i].error_code[0] &&
		    strcmp(res->r[i].shard_id, q->units[i].shard_id) != 0)
			return true;
	return false;
}

/* Drops acknowledged records, keeping the order of the rest. */
static void compact(struct demo_queue *q)
{
	size_t o = 0;

	for (size_t i = 0; i < q->n; i++) {
		struct qrec *r = q->recs[i];

		if (r->acked) {
			free(r);
			continue;
		}
		r->next_in_unit = NULL;
		q->recs[o++] = r;
	}
	q->n = o;
	q->nunits = 0;
	q->batch_out = false;
}

enum kl_err demo_queue_settle(struct demo_queue *q, const struct kinesis_put_results *res,
			      demo_ack_fn on_ack, void *arg, struct demo_settle_stats *ret_stats)
{
	struct demo_settle_stats st;

	if (!q->batch_out || !res || res->n != q->nunits)
		return KL_EINVAL;
	memset(&st, 0, sizeof(st));
	for (size_t i = 0; i < q->nunits; i++) {
		const struct kinesis_put_result *pr = &res->r[i];
		struct unit *u = &q->units[i];
		bool ok = !pr->error_code[0] && pr->sequence_number[0];
		uint64_t sub = 0;

		if (ok && u->n > 1 && strcmp(pr->shard_id, u->shard_id) != 0) {
			/* Landed elsewhere (the map was stale): a consumer keeps
			 * it only if every user record is in that shard's range,
			 * else drops it whole, and then it must be sent again. */
			const struct qshard *sh = shard_by_id(q, pr->shard_id);

			st.misrouted_entries++;
			for (struct qrec *r = u->head; ok && r; r = r->next_in_unit)
				if (!sh || !kpl_hash_range_contains(&sh->range, r->hash))
					ok = false;
			if (!ok)
				st.filtered_entries++;
		}
		if (!ok) {
			st.failed_entries++;
			st.failed_records += u->n;
			if (strcmp(pr->error_code, "ProvisionedThroughputExceededException") == 0)
				st.throttled_entries++;
			continue;
		}
		for (struct qrec *r = u->head; r; r = r->next_in_unit, sub++) {
			r->acked = true;
			st.acked_records++;
			st.acked_bytes += r->len;
			if (on_ack)
				on_ack(arg, &r->ev, r->len, pr->shard_id, pr->sequence_number,
				       u->n > 1 ? sub : 0);
		}
	}
	compact(q);
	if (ret_stats)
		*ret_stats = st;
	return KL_OK;
}

void demo_queue_abandon(struct demo_queue *q)
{
	compact(q);
}

/* ======================================================== command */

#define EXIT_USAGE 64
#define EXIT_CONFIG 78
#define LINGER_MS 100              /* wait at most this long to fill a batch */
#define PROGRESS_MS 5000
#define MAX_CALL_FAILURES 10       /* consecutive failed PutRecords calls, then give up */
#define BACKOFF_BASE_MS 100
#define BACKOFF_MAX_MS 5000

/* Set by the signal handler: 1 = stop generating and drain, 2 = give up. */
static volatile sig_atomic_t demo_stop;

static void on_signal(int sig)
{
	(void)sig;
	if (demo_stop < 2)
		demo_stop = demo_stop + 1;
}

struct produce_opts {
	const char *stream;
	const char *config;
	const char *endpoint;
	const char *region;
	const char *manifest;
	double rate;                   /* events/s; 0 = as fast as possible */
	uint64_t count;                /* 0 = unlimited */
	double duration_s;             /* 0 = unlimited */
	bool kpl;
	unsigned kpl_per_record;
	struct demo_gen_opts gen;
	uint64_t seed;
	bool have_seed;
	int create_shards;
	bool quiet;
};

struct produce_stats {
	uint64_t generated;
	uint64_t acked;
	uint64_t acked_bytes;
	uint64_t acked_kind[DEMO_KIND_COUNT];
	uint64_t calls;
	uint64_t failed_calls;
	uint64_t kinesis_records;      /* entries written */
	uint64_t retried_records;      /* Kinesis records sent again */
	uint64_t throttled;
	uint64_t misrouted;
	FILE *manifest;
	bool manifest_error;
};

static void usage(void)
{
	fprintf(stderr,
		"usage: kinlake demo produce --stream NAME [-c CONFIG] [--endpoint URL] [--region R]\n"
		"          ... (options below)\n"
		"       kinlake demo split --stream NAME [--shard ID] [-c CONFIG] [--endpoint URL]\n"
		"          splits an open shard in the middle of its hash range\n"
		"       kinlake demo merge --stream NAME [--shard ID] [-c CONFIG] [--endpoint URL]\n"
		"          merges an open shard with an open neighbour in the hash-key space\n"
		"\n"
		"produce options:\n"
		"          [--rate N[/s]] [--count N | --duration S] [--kpl] [--kpl-per-record K]\n"
		"          [--malformed-pct P] [--bot-pct P] [--seed N] [--ids-from N]\n"
		"          [--sessions N] [--create-shards N] [--manifest FILE] [--quiet]\n"
		"\n"
		"Writes website clickstream events (JSON) to a Kinesis stream with PutRecords.\n"
		"  --rate N        events per second (token bucket); 0 = as fast as possible (default)\n"
		"  --count N       stop after N events; --duration S: after S seconds; else on SIGINT\n"
		"  --kpl           aggregate user records into KPL records (K per record, default %d)\n"
		"  --malformed-pct P  percent of malformed events (default %.1f)\n"
		"  --bot-pct P     percent of events from crawler sessions (default %.1f)\n"
		"  --seed N        event ids are \"<seed>-<n>\" (default: a random seed, printed)\n"
		"  --ids-from N    the first n (default 0); a later run continues with other sessions\n"
		"  --sessions N    visitor sessions open at once (default %d); partition key = session\n"
		"  --create-shards N  create the stream with N shards if missing, wait until ACTIVE\n"
		"  --manifest FILE    one line per written event: id, key, seq, kind, shard, sequence\n"
		"Endpoint and credentials come from -c CONFIG (endpoints.kinesis, credentials) or the\n"
		"standard AWS chain; --endpoint and --region override. stdout gets one summary line.\n",
		DEMO_KPL_DEFAULT_PER_RECORD, DEMO_DEFAULT_MALFORMED_PCT, DEMO_DEFAULT_BOT_PCT,
		DEMO_DEFAULT_SESSIONS);
}

static bool parse_u64(const char *s, uint64_t max, uint64_t *ret)
{
	char *end;
	unsigned long long v;

	if (!s || !*s || *s == '-' || *s == '+')
		return false;
	errno = 0;
	v = strtoull(s, &end, 10);
	if (errno || *end || v > max)
		return false;
	*ret = v;
	return true;
}

static bool parse_double(const char *s, const char *suffix, double max, double *ret)
{
	char *end;
	double v;

	if (!s || !*s)
		return false;
	errno = 0;
	v = strtod(s, &end);
	if (suffix && strcmp(end, suffix) == 0)
		end += strlen(end);
	if (errno || *end || !(v >= 0 && v <= max))
		return false;
	*ret = v;
	return true;
}

static bool is_value_option(const char *name)
{
	static const char *const names[] = {
		"--stream", "-c", "--config", "--endpoint", "--region", "--manifest", "--rate",
		"--count", "--duration", "--kpl-per-record", "--malformed-pct", "--bot-pct",
		"--seed", "--ids-from", "--sessions", "--create-shards",
	};

	for (size_t i = 0; i < KL_ARRAY_LEN(names); i++)
		if (strcmp(name, names[i]) == 0)
			return true;
	return false;
}

/* Parses argv[first..argc). Returns 0, or EXIT_USAGE after printing why. */
static int parse_args(int argc, char **argv, int first, struct produce_opts *o)
{
	uint64_t u;
	double d;
	bool have_count = false, have_duration = false;

	memset(o, 0, sizeof(*o));
	demo_gen_opts_default(&o->gen);
	o->kpl_per_record = DEMO_KPL_DEFAULT_PER_RECORD;
	for (int i = first; i < argc; i++) {
		const char *a = argv[i], *eq = strchr(a, '='), *v = NULL;
		char name[32];
		size_t nlen = eq ? (size_t)(eq - a) : strlen(a);

		if (nlen >= sizeof(name))
			nlen = sizeof(name) - 1;
		memcpy(name, a, nlen);
		name[nlen] = '\0';
		if (strcmp(name, "--kpl") == 0 && !eq) {
			o->kpl = true;
			continue;
		}
		if (strcmp(name, "--quiet") == 0 && !eq) {
			o->quiet = true;
			continue;
		}
		if (strcmp(name, "-h") == 0 || strcmp(name, "--help") == 0) {
			usage();
			return EXIT_USAGE;
		}
		if (!is_value_option(name)) {
			fprintf(stderr, "demo: unknown option '%s'\n", a);
			usage();
			return EXIT_USAGE;
		}
		if (eq && name[1] == '-') {
			v = eq + 1;
		} else if (i + 1 < argc) {
			v = argv[++i];
		} else {
			fprintf(stderr, "demo: %s needs a value\n", a);
			return EXIT_USAGE;
		}
		if (strcmp(name, "--stream") == 0) {
			o->stream = v;
		} else if (strcmp(name, "-c") == 0 || strcmp(name, "--config") == 0) {
			o->config = v;
		} else if (strcmp(name, "--endpoint") == 0) {
			o->endpoint = v;
		} else if (strcmp(name, "--region") == 0) {
			o->region = v;
		} else if (strcmp(name, "--manifest") == 0) {
			o->manifest = v;
		} else if (strcmp(name, "--rate") == 0) {
			if (!parse_double(v, "/s", 10e6, &o->rate))
				goto bad;
		} else if (strcmp(name, "--count") == 0) {
			if (!parse_u64(v, UINT64_MAX / 2, &o->count) || o->count == 0)
				goto bad;
			have_count = true;
		} else if (strcmp(name, "--duration") == 0) {
			if (!parse_double(v, "s", 1e9, &o->duration_s) || o->duration_s <= 0)
				goto bad;
			have_duration = true;
		} else if (strcmp(name, "--kpl-per-record") == 0) {
			if (!parse_u64(v, DEMO_KPL_MAX_PER_RECORD, &u) || u < 1)
				goto bad;
			o->kpl_per_record = (unsigned)u;
		} else if (strcmp(name, "--malformed-pct") == 0) {
			if (!parse_double(v, "%", 100, &d))
				goto bad;
			o->gen.malformed_pct = d;
		} else if (strcmp(name, "--bot-pct") == 0) {
			if (!parse_double(v, "%", 100, &d))
				goto bad;
			o->gen.bot_pct = d;
		} else if (strcmp(name, "--seed") == 0) {
			if (!parse_u64(v, UINT64_MAX, &o->seed))
				goto bad;
			o->have_seed = true;
		} else if (strcmp(name, "--ids-from") == 0) {
			if (!parse_u64(v, UINT64_MAX / 2, &o->gen.first_id))
				goto bad;
		} else if (strcmp(name, "--sessions") == 0) {
			if (!parse_u64(v, DEMO_SESSIONS_MAX, &u) || u < 1)
				goto bad;
			o->gen.sessions = (unsigned)u;
		} else if (strcmp(name, "--create-shards") == 0) {
			if (!parse_u64(v, 10000, &u) || u < 1)
				goto bad;
			o->create_shards = (int)u;
		}
		continue;
bad:
		fprintf(stderr, "demo: bad value '%s' for %s\n", v, name);
		return EXIT_USAGE;
	}
	if (have_count && have_duration) {
		fprintf(stderr, "demo: --count and --duration exclude each other\n");
		return EXIT_USAGE;
	}
	return 0;
}

static void on_ack(void *arg, const struct demo_event *ev, size_t len, const char *shard_id,
		   const char *sequence_number, uint64_t sub)
{
	struct produce_stats *ps = arg;

	ps->acked++;
	ps->acked_bytes += len;
	ps->acked_kind[ev->kind]++;
	if (ps->manifest &&
	    fprintf(ps->manifest, "%s\t%s\t%" PRIu64 "\t%s\t%s\t%s\t%" PRIu64 "\n", ev->event_id,
		    ev->partition_key, ev->seq, demo_kind_name(ev->kind), shard_id,
		    sequence_number, sub) < 0)
		ps->manifest_error = true;
}

static const char *errstr(enum kl_err err, const struct kl_errinfo *info, char *buf, size_t size)
{
	return kl_errinfo_format(err, info, buf, size);
}

/* Creates the stream when missing (and asked to), then waits for ACTIVE. */
static int prepare_stream(struct aws_client *c, const struct produce_opts *o)
{
	struct kinesis_stream_summary sum;
	struct kl_errinfo info;
	char eb[768];
	enum kl_err err;

	kl_errinfo_clear(&info);
	err = kinesis_describe_stream_summary(c, o->stream, &sum, &info);
	if (err == KL_ENOTFOUND && o->create_shards > 0) {
		err = kinesis_create_stream(c, o->stream, o->create_shards, &info);
		if (err != KL_OK && err != KL_EEXISTS) {
			fprintf(stderr, "demo: cannot create stream '%s': %s\n", o->stream,
				errstr(err, &info, eb, sizeof(eb)));
			return 1;
		}
		if (!o->quiet)
			fprintf(stderr, "demo: created stream '%s' with %d shards\n", o->stream,
				o->create_shards);
	} else if (err != KL_OK) {
		fprintf(stderr, "demo: stream '%s': %s\n", o->stream,
			errstr(err, &info, eb, sizeof(eb)));
		return 1;
	}
	err = kinesis_wait_active(c, o->stream, 60000, &sum, &info);
	if (err != KL_OK) {
		fprintf(stderr, "demo: stream '%s' did not become ACTIVE: %s\n", o->stream,
			errstr(err, &info, eb, sizeof(eb)));
		return 1;
	}
	return 0;
}

/* Loads the open shards into the queue, retrying while a reshard leaves
 * the map incomplete. */
static int load_shards(struct aws_client *c, const char *stream, struct demo_queue *q)
{
	struct kl_errinfo info;
	char eb[768];

	for (int attempt = 0; attempt < 40; attempt++) {
		struct kinesis_shard *shards = NULL;
		size_t n = 0;
		enum kl_err err;

		kl_errinfo_clear(&info);
		err = kinesis_list_shards(c, stream, NULL, &shards, &n, &info);
		if (err == KL_OK) {
			err = demo_queue_set_shards(q, shards, n);
			free(shards);
			if (err == KL_OK)
				return 0;
			if (err != KL_EINVAL) {
				fprintf(stderr, "demo: %s\n", kl_strerror(err));
				return 1;
			}
		} else if (!kl_err_retryable(err)) {
			fprintf(stderr, "demo: ListShards on '%s': %s\n", stream,
				errstr(err, &info, eb, sizeof(eb)));
			return 1;
		}
		kl_sleep_ms(250);
	}
	fprintf(stderr, "demo: the open shards of '%s' do not cover the hash-key space\n", stream);
	return 1;
}

static void print_progress(const struct produce_stats *ps, int64_t elapsed_ms, size_t queued)
{
	double s = elapsed_ms > 0 ? (double)elapsed_ms / 1000.0 : 0.001;

	fprintf(stderr, "demo: %.1f s: %" PRIu64 " generated, %" PRIu64 " written (%.0f/s), %zu queued,"
		" %" PRIu64 " calls, %" PRIu64 " records retried\n", s, ps->generated, ps->acked,
		(double)ps->acked / s, queued, ps->calls, ps->retried_records);
}

struct runner {
	struct produce_opts *o;
	struct aws_client *c;
	struct demo_gen *gen;
	struct demo_queue *q;
	struct produce_stats ps;
	int failures;                  /* consecutive failed calls or batches */
	int64_t not_before;            /* no call before this monotonic ms (backoff) */
	struct kl_rng rng;             /* backoff jitter */
};

static void backoff(struct runner *rn, int64_t now)
{
	int64_t cap = BACKOFF_BASE_MS << (rn->failures < 7 ? rn->failures : 7);

	if (cap > BACKOFF_MAX_MS)
		cap = BACKOFF_MAX_MS;
	rn->not_before = now + (int64_t)kl_rng_below(&rn->rng, (uint64_t)cap + 1);
}

/* Sends one batch. Returns 0, or 1 on an error that ends the run. */
static int send_batch(struct runner *rn)
{
	const struct kinesis_put_entry *entries;
	struct kinesis_put_results *res = NULL;
	struct demo_settle_stats st;
	struct kl_errinfo info;
	char eb[768];
	size_t n = 0;
	enum kl_err err;

	err = demo_queue_take(rn->q, KINESIS_PUT_RECORDS_MAX, &entries, &n);
	if (err != KL_OK) {
		fprintf(stderr, "demo: cannot form a batch: %s\n", kl_strerror(err));
		return 1;
	}
	if (n == 0)
		return 0;
	kl_errinfo_clear(&info);
	err = kinesis_put_records(rn->c, rn->o->stream, entries, n, &res, &info);
	rn->ps.calls++;
	if (err != KL_OK) {
		/* Nothing is known to be written: the batch stays queued. (A
		 * timeout after the service wrote it would duplicate it; the
		 * client's own retries have the same property.) */
		demo_queue_abandon(rn->q);
		rn->ps.failed_calls++;
		if (!(kl_err_retryable(err) || err == KL_EBUDGET) ||
		    ++rn->failures > MAX_CALL_FAILURES) {
			fprintf(stderr, "demo: PutRecords on '%s': %s\n", rn->o->stream,
				errstr(err, &info, eb, sizeof(eb)));
			return 1;
		}
		if (!rn->o->quiet)
			fprintf(stderr, "demo: PutRecords failed (%s), retrying\n",
				errstr(err, &info, eb, sizeof(eb)));
		backoff(rn, kl_mono_ms());
		return 0;
	}
	if (rn->o->kpl && demo_queue_misrouted(rn->q, res) &&
	    load_shards(rn->c, rn->o->stream, rn->q) != 0) {
		demo_queue_abandon(rn->q);
		free(res);
		return 1;
	}
	err = demo_queue_settle(rn->q, res, on_ack, &rn->ps, &st);
	free(res);
	if (err != KL_OK) {
		fprintf(stderr, "demo: PutRecords answer does not match the batch\n");
		return 1;
	}
	rn->ps.kinesis_records += n - st.failed_entries;
	rn->ps.retried_records += st.failed_entries;
	rn->ps.throttled += st.throttled_entries;
	rn->ps.misrouted += st.misrouted_entries;
	if (st.failed_entries) {
		rn->failures++;
		backoff(rn, kl_mono_ms());
	} else {
		rn->failures = 0;
	}
	return 0;
}

/* The produce loop. Returns 0 when everything generated was written. */
static int produce(struct runner *rn)
{
	struct produce_opts *o = rn->o;
	size_t per = o->kpl ? o->kpl_per_record : 1;
	size_t qmax = DEMO_QUEUE_DEFAULT_MAX;
	size_t threshold = KINESIS_PUT_RECORDS_MAX * per, fill;
	int64_t start = kl_mono_ms(), last_send = start, last_progress = start, last_refill = start;
	double tokens = 1, burst = o->rate > 2 ? o->rate / 2 : 1;
	bool gen_done = false;
	struct buf data;
	int rc = 0;

	if (threshold > qmax / 2)
		threshold = qmax / 2;
	/* Keep about two batches queued: enough distinct keys to fill one
	 * (a batch takes one record per key), little to scan. */
	fill = 2 * threshold;
	buf_init(&data, DEMO_EVENT_MAX * 2);
	for (;;) {
		int64_t now = kl_mono_ms();

		if (demo_stop >= 2) {
			fprintf(stderr, "demo: interrupted again, giving up with %zu events unsent\n",
				demo_queue_len(rn->q));
			rc = 1;
			break;
		}
		if (!gen_done && (demo_stop || (o->count && rn->ps.generated >= o->count) ||
				  (o->duration_s > 0 && now - start >= (int64_t)(o->duration_s * 1000))))
			gen_done = true;
		if (!gen_done && o->rate > 0) {
			tokens += (double)(now - last_refill) * o->rate / 1000.0;
			if (tokens > burst)
				tokens = burst;
			last_refill = now;
		}
		while (!gen_done && (o->rate <= 0 || tokens >= 1) && demo_queue_len(rn->q) < fill &&
		       !(o->count && rn->ps.generated >= o->count)) {
			struct demo_event ev;

			buf_reset(&data);
			if (demo_gen_event(rn->gen, kl_wall_ms(), &data, &ev) != KL_OK ||
			    demo_queue_add(rn->q, &ev, data.data, data.len) != KL_OK) {
				fprintf(stderr, "demo: out of memory\n");
				rc = 1;
				goto out;
			}
			rn->ps.generated++;
			if (o->rate > 0)
				tokens -= 1;
		}
		if (gen_done && demo_queue_len(rn->q) == 0)
			break;
		if (demo_queue_len(rn->q) > 0 && now >= rn->not_before &&
		    (gen_done || demo_queue_len(rn->q) >= threshold || now - last_send >= LINGER_MS)) {
			if (send_batch(rn) != 0) {
				rc = 1;
				break;
			}
			last_send = now;
		} else {
			int64_t wait = LINGER_MS - (now - last_send);

			if (o->rate > 0 && !gen_done && tokens < 1) {
				int64_t t = (int64_t)((1 - tokens) * 1000.0 / o->rate) + 1;

				if (t < wait)
					wait = t;
			}
			if (rn->not_before > now && rn->not_before - now < wait)
				wait = rn->not_before - now;
			if (wait < 1)
				wait = 1;
			if (wait > 50)
				wait = 50;
			kl_sleep_ms(wait);
		}
		if (!o->quiet && now - last_progress >= PROGRESS_MS) {
			print_progress(&rn->ps, now - start, demo_queue_len(rn->q));
			last_progress = now;
		}
	}
out:
	buf_done(&data);
	return rc;
}

static void print_summary(const struct runner *rn, int64_t elapsed_ms)
{
	const struct produce_stats *ps = &rn->ps;
	double s = elapsed_ms > 0 ? (double)elapsed_ms / 1000.0 : 0.001;
	uint64_t malformed = 0;

	for (int k = 0; k < DEMO_KIND_COUNT; k++)
		if (demo_kind_malformed((enum demo_kind)k))
			malformed += ps->acked_kind[k];
	fprintf(stderr,
		"demo: %" PRIu64 " events written to '%s' (%" PRIu64 " ok, %" PRIu64 " bots, %" PRIu64
		" malformed) as %" PRIu64 " Kinesis records%s, %" PRIu64 " bytes, in %" PRIu64
		" PutRecords calls (%" PRIu64 " failed); %" PRIu64 " records retried (%" PRIu64
		" throttled, %" PRIu64 " misrouted); %.2f s, %.0f events/s, %.2f MiB/s\n",
		ps->acked, rn->o->stream, ps->acked_kind[DEMO_KIND_OK], ps->acked_kind[DEMO_KIND_BOT],
		malformed, ps->kinesis_records, rn->o->kpl ? " (KPL)" : "", ps->acked_bytes, ps->calls,
		ps->failed_calls, ps->retried_records, ps->throttled, ps->misrouted, s,
		(double)ps->acked / s, (double)ps->acked_bytes / s / 1048576.0);
}

/*
 * Fills the Kinesis client and credential settings from -c CONFIG, or from
 * the environment's region when there is no config; --endpoint and
 * --region override. *stream defaults to the config's stream. On success
 * *ret_cfg is the loaded config (or NULL; the settings point into it, so
 * free it after the client). Returns 0, EXIT_CONFIG or EXIT_USAGE.
 */
static int load_client_config(const char *config, const char *endpoint, const char *region,
			      const char **stream, struct kl_config **ret_cfg,
			      struct aws_client_config *ac, struct creds_config *cc)
{
	struct kl_config *cfg = NULL;

	if (config) {
		struct cfg_errors errors;
		enum kl_err err;

		cfg_errors_init(&errors);
		err = cfg_load(config, &cfg, &errors);
		if (err != KL_OK) {
			cfg_errors_print(&errors, stderr);
			cfg_errors_done(&errors);
			return EXIT_CONFIG;
		}
		cfg_errors_done(&errors);
		cfg_aws_client_config(cfg, CFG_SERVICE_KINESIS, ac);
		cfg_creds_config(cfg, cc);
		if (!*stream && cfg->stream[0])
			*stream = cfg->stream;
	} else {
		const char *env = getenv("AWS_REGION");

		memset(ac, 0, sizeof(*ac));
		memset(cc, 0, sizeof(*cc));
		ac->service = "kinesis";
		if (!env || !*env)
			env = getenv("AWS_DEFAULT_REGION");
		ac->region = env && *env ? env : "us-east-1";
	}
	if (endpoint)
		ac->endpoint = endpoint;
	if (region)
		ac->region = region;
	cc->region = ac->region;
	if (!*stream || !kinesis_stream_name(*stream)) {
		fprintf(stderr, "demo: --stream NAME is required\n");
		usage();
		cfg_free(cfg);
		return EXIT_USAGE;
	}
	*ret_cfg = cfg;
	return 0;
}

static int produce_main(int argc, char **argv)
{
	struct produce_opts o;
	struct kl_config *cfg = NULL;
	struct creds_chain *creds = NULL;
	struct aws_client client;
	struct aws_client_config ac;
	struct creds_config cc;
	struct demo_queue_opts qo;
	struct runner rn;
	struct sigaction sa, old_int, old_term;
	int64_t start;
	int rc;
	enum kl_err err;

	rc = parse_args(argc, argv, 2, &o);
	if (rc)
		return rc;
	memset(&client, 0, sizeof(client));
	memset(&rn, 0, sizeof(rn));
	rc = load_client_config(o.config, o.endpoint, o.region, &o.stream, &cfg, &ac, &cc);
	if (rc)
		return rc;
	if (!o.have_seed) {
		struct kl_rng r;

		kl_rng_seed(&r);
		o.seed = kl_rng_below(&r, 1000000000);
	}

	rc = 1;
	rn.o = &o;
	rn.c = &client;
	kl_rng_seed(&rn.rng);
	if (http_global_init() != KL_OK) {
		cfg_free(cfg);
		return 1;
	}
	memset(&qo, 0, sizeof(qo));
	/* --kpl-per-record 1 leaves nothing to aggregate: plain records. */
	qo.kpl_per_record = o.kpl && o.kpl_per_record > 1 ? o.kpl_per_record : 0;
	o.kpl = qo.kpl_per_record > 1;
	if ((err = creds_chain_new(&cc, &creds)) != KL_OK ||
	    (err = aws_client_init(&client, &ac, creds)) != KL_OK ||
	    (err = demo_gen_new(o.seed, &o.gen, &rn.gen)) != KL_OK ||
	    (err = demo_queue_new(&qo, &rn.q)) != KL_OK) {
		fprintf(stderr, "demo: cannot set up: %s\n", kl_strerror(err));
		goto done;
	}
	if (o.manifest) {
		rn.ps.manifest = fopen(o.manifest, "w");
		if (!rn.ps.manifest) {
			fprintf(stderr, "demo: cannot write %s: %s\n", o.manifest, strerror(errno));
			goto done;
		}
	}
	if (o.create_shards > 0 && prepare_stream(&client, &o) != 0)
		goto done;
	if (o.kpl && load_shards(&client, o.stream, rn.q) != 0)
		goto done;

	demo_stop = 0;
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_signal;
	sigemptyset(&sa.sa_mask);
	sigaction(SIGINT, &sa, &old_int);
	sigaction(SIGTERM, &sa, &old_term);
	start = kl_mono_ms();
	rc = produce(&rn);
	sigaction(SIGINT, &old_int, NULL);
	sigaction(SIGTERM, &old_term, NULL);

	if (!o.quiet)
		print_summary(&rn, kl_mono_ms() - start);
	if (rn.ps.manifest && (fclose(rn.ps.manifest) != 0 || rn.ps.manifest_error)) {
		fprintf(stderr, "demo: writing %s failed\n", o.manifest);
		rc = 1;
	}
	rn.ps.manifest = NULL;
	{
		uint64_t first = o.gen.first_id, next = first + rn.ps.generated, malformed = 0;
		bool complete = rn.ps.acked == rn.ps.generated;

		for (int k = 0; k < DEMO_KIND_COUNT; k++)
			if (demo_kind_malformed((enum demo_kind)k))
				malformed += rn.ps.acked_kind[k];
		if (rn.ps.generated)
			printf("event_ids=%" PRIu64 "-%" PRIu64 "..%" PRIu64 "-%" PRIu64, o.seed, first,
			       o.seed, next - 1);
		else
			printf("event_ids=");
		printf(" stream=%s seed=%" PRIu64 " first=%" PRIu64 " next=%" PRIu64
		       " generated=%" PRIu64 " acked=%" PRIu64 " ok=%" PRIu64 " bots=%" PRIu64
		       " malformed=%" PRIu64 " complete=%s\n",
		       o.stream, o.seed, first, next, rn.ps.generated, rn.ps.acked,
		       rn.ps.acked_kind[DEMO_KIND_OK], rn.ps.acked_kind[DEMO_KIND_BOT], malformed,
		       complete ? "yes" : "no");
		fflush(stdout);
		if (!complete)
			rc = 1;
	}
done:
	if (rn.ps.manifest)
		fclose(rn.ps.manifest);
	demo_queue_free(rn.q);
	demo_gen_free(rn.gen);
	aws_client_done(&client);
	creds_chain_free(creds);
	http_global_cleanup();
	cfg_free(cfg);
	return rc;
}

/* What `demo split` and `demo merge` share: the options, a client, the shards. */
struct reshard {
	const char *verb;               /* "split" or "merge"; static */
	const char *stream, *shard;     /* borrowed from argv (or the config) */
	struct kl_config *cfg;
	struct creds_chain *creds;
	struct aws_client client;
	struct kinesis_shard *shards;   /* n of them, from ListShards */
	size_t n;
	bool http_up;
};

/* Prints "demo: <verb> failed: ..." for err. */
static void reshard_fail(const struct reshard *rs, enum kl_err err, const struct kl_errinfo *info)
{
	char msg[512];

	fprintf(stderr, "demo: %s failed: %s\n", rs->verb, kl_errinfo_format(err, info, msg, sizeof(msg)));
}

/*
 * Parses `kinlake demo VERB --stream NAME [--shard ID] [-c CONFIG]
 * [--endpoint URL] [--region R]`, makes the client and lists the stream's
 * shards into rs. Returns 0, or the exit status (usage, configuration, or
 * 1 with the reason printed); reshard_close() in every case.
 */
static int reshard_open(int argc, char **argv, const char *verb, struct reshard *rs)
{
	const char *config = NULL, *endpoint = NULL, *region = NULL;
	struct aws_client_config ac;
	struct creds_config cc;
	struct kl_errinfo info;
	enum kl_err err;
	int rc;

	memset(rs, 0, sizeof(*rs));
	rs->verb = verb;
	for (int i = 2; i < argc; i++) {
		const char **dst = strcmp(argv[i], "--stream") == 0 ? &rs->stream
				   : strcmp(argv[i], "--shard") == 0 ? &rs->shard
				   : strcmp(argv[i], "-c") == 0 || strcmp(argv[i], "--config") == 0 ? &config
				   : strcmp(argv[i], "--endpoint") == 0 ? &endpoint
				   : strcmp(argv[i], "--region") == 0 ? &region : NULL;
		if (!dst || i + 1 >= argc) {
			fprintf(stderr, "usage: kinlake demo %s --stream NAME [--shard ID] "
					"[-c CONFIG] [--endpoint URL] [--region R]\n", verb);
			return EXIT_USAGE;
		}
		*dst = argv[++i];
	}
	rc = load_client_config(config, endpoint, region, &rs->stream, &rs->cfg, &ac, &cc);
	if (rc)
		return rc;
	if (http_global_init() != KL_OK)
		return 1;
	rs->http_up = true;
	kl_errinfo_clear(&info);
	if ((err = creds_chain_new(&cc, &rs->creds)) != KL_OK ||
	    (err = aws_client_init(&rs->client, &ac, rs->creds)) != KL_OK ||
	    (err = kinesis_list_shards(&rs->client, rs->stream, NULL, &rs->shards, &rs->n, &info)) != KL_OK) {
		reshard_fail(rs, err, &info);
		return 1;
	}
	return 0;
}

static void reshard_close(struct reshard *rs)
{
	free(rs->shards);
	aws_client_done(&rs->client);
	creds_chain_free(rs->creds);
	if (rs->http_up)
		http_global_cleanup();
	cfg_free(rs->cfg);
}

/*
 * `kinlake demo split --stream NAME [--shard ID] [-c CONFIG] [--endpoint URL]
 * [--region R]`: splits one open shard (the given one, or the first open
 * one) in the middle of its hash range, waits until the stream is ACTIVE
 * again, and prints the parent and the two children. The demo uses it to
 * show resharding while the fleet runs.
 */
static int split_main(int argc, char **argv)
{
	struct reshard rs;
	struct kinesis_shard *target = NULL;
	struct kinesis_hash_key lo, hi, mid;
	char mid_dec[KINESIS_HASH_KEY_MAX + 1], parent[KINESIS_SHARD_ID_MAX + 1];
	struct kl_errinfo info;
	int rc = reshard_open(argc, argv, "split", &rs);
	enum kl_err err;

	if (rc)
		goto done;
	rc = 1;
	kl_errinfo_clear(&info);
	for (size_t i = 0; i < rs.n && !target; i++)
		if (!kinesis_shard_is_closed(&rs.shards[i]) &&
		    (!rs.shard || strcmp(rs.shards[i].shard_id, rs.shard) == 0))
			target = &rs.shards[i];
	if (!target) {
		fprintf(stderr, "demo: no open shard %s%sin stream '%s'\n", rs.shard ? rs.shard : "",
			rs.shard ? " " : "", rs.stream);
		goto done;
	}
	if ((err = kinesis_hash_key_parse(target->starting_hash_key, &lo)) != KL_OK ||
	    (err = kinesis_hash_key_parse(target->ending_hash_key, &hi)) != KL_OK)
		goto fail;
	kinesis_hash_key_mid(&lo, &hi, &mid);
	kinesis_hash_key_format(&mid, mid_dec);
	if ((err = kinesis_split_shard(&rs.client, rs.stream, target->shard_id, mid_dec, &info)) != KL_OK ||
	    (err = kinesis_wait_active(&rs.client, rs.stream, 60000, NULL, &info)) != KL_OK)
		goto fail;
	snprintf(parent, sizeof(parent), "%s", target->shard_id);
	printf("split %s at hash key %s\n", parent, mid_dec);
	free(rs.shards);
	rs.shards = NULL;
	if ((err = kinesis_list_shards(&rs.client, rs.stream, NULL, &rs.shards, &rs.n, &info)) != KL_OK)
		goto fail;
	for (size_t i = 0; i < rs.n; i++)
		if (strcmp(rs.shards[i].parent_shard_id, parent) == 0 &&
		    rs.shards[i].adjacent_parent_shard_id[0] == '\0')
			printf("child %s\n", rs.shards[i].shard_id);
	rc = 0;
	goto done;
fail:
	reshard_fail(&rs, err, &info);
done:
	reshard_close(&rs);
	return rc;
}

/* *ret_next = key + 1; false when key is 2^128 - 1. */
static bool hash_key_next(const struct kinesis_hash_key *key, struct kinesis_hash_key *ret_next)
{
	struct kinesis_hash_key k = *key;

	for (int i = 3; i >= 0; i--)
		if (++k.w[i] != 0) {
			*ret_next = k;
			return true;
		}
	return false;
}

/* True when open shard b's hash range starts right after a's ends. */
static bool shards_adjacent(const struct kinesis_shard *a, const struct kinesis_shard *b)
{
	struct kinesis_hash_key a_end, b_start, next;

	return !kinesis_shard_is_closed(a) && !kinesis_shard_is_closed(b) &&
	       kinesis_hash_key_parse(a->ending_hash_key, &a_end) == KL_OK &&
	       kinesis_hash_key_parse(b->starting_hash_key, &b_start) == KL_OK &&
	       hash_key_next(&a_end, &next) && kinesis_hash_key_cmp(&next, &b_start) == 0;
}

/*
 * `kinlake demo merge --stream NAME [--shard ID] [-c CONFIG] [--endpoint URL]
 * [--region R]`: merges one open shard (the given one, or the first open
 * one that has an open neighbour) with the open shard whose hash range
 * follows it (or, if none, precedes it), waits until the stream is ACTIVE
 * again, and prints the two parents and the child. The chaos test uses it
 * to reshard both ways while the fleet runs.
 */
static int merge_main(int argc, char **argv)
{
	struct reshard rs;
	char first[KINESIS_SHARD_ID_MAX + 1] = "", second[KINESIS_SHARD_ID_MAX + 1] = "";
	struct kl_errinfo info;
	int rc = reshard_open(argc, argv, "merge", &rs);
	enum kl_err err;

	if (rc)
		goto done;
	rc = 1;
	kl_errinfo_clear(&info);
	/* The pair, lower hash range first: the named shard (or the first
	 * open one that has one) and the shard above it; then, for a named
	 * shard only, the shard below it. */
	for (int below = 0; below < (rs.shard ? 2 : 1) && !first[0]; below++)
		for (size_t i = 0; i < rs.n && !first[0]; i++) {
			if (rs.shard && strcmp(rs.shards[i].shard_id, rs.shard) != 0)
				continue;
			for (size_t j = 0; j < rs.n && !first[0]; j++) {
				const struct kinesis_shard *lo = below ? &rs.shards[j] : &rs.shards[i];
				const struct kinesis_shard *hi = below ? &rs.shards[i] : &rs.shards[j];

				if (shards_adjacent(lo, hi)) {
					snprintf(first, sizeof(first), "%s", lo->shard_id);
					snprintf(second, sizeof(second), "%s", hi->shard_id);
				}
			}
		}
	if (!first[0]) {
		fprintf(stderr, "demo: no open shard %s%swith an open neighbour in stream '%s'\n",
			rs.shard ? rs.shard : "", rs.shard ? " " : "", rs.stream);
		goto done;
	}
	if ((err = kinesis_merge_shards(&rs.client, rs.stream, first, second, &info)) != KL_OK ||
	    (err = kinesis_wait_active(&rs.client, rs.stream, 60000, NULL, &info)) != KL_OK)
		goto fail;
	printf("merged %s and %s\n", first, second);
	free(rs.shards);
	rs.shards = NULL;
	if ((err = kinesis_list_shards(&rs.client, rs.stream, NULL, &rs.shards, &rs.n, &info)) != KL_OK)
		goto fail;
	for (size_t i = 0; i < rs.n; i++)
		if (strcmp(rs.shards[i].parent_shard_id, first) == 0 &&
		    strcmp(rs.shards[i].adjacent_parent_shard_id, second) == 0)
			printf("child %s\n", rs.shards[i].shard_id);
	rc = 0;
	goto done;
fail:
	reshard_fail(&rs, err, &info);
done:
	reshard_close(&rs);
	return rc;
}

int demo_main(int argc, char **argv)
{
	if (argc < 2 || strcmp(argv[1], "-h") == 0 || strcmp(argv[1], "--help") == 0 ||
	    strcmp(argv[1], "help") == 0) {
		usage();
		return argc < 2 ? EXIT_USAGE : 0;
	}
	if (strcmp(argv[1], "produce") == 0)
		return produce_main(argc, argv);
	if (strcmp(argv[1], "split") == 0)
		return split_main(argc, argv);
	if (strcmp(argv[1], "merge") == 0)
		return merge_main(argc, argv);
	fprintf(stderr, "demo: unknown subcommand '%s' (try 'kinlake demo help')\n", argv[1]);
	return EXIT_USAGE;
}
