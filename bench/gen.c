/* SPDX-License-Identifier: Apache-2.0 */
/*
 * gen.c: the benchmarks' one clickstream generator (see gen.h). Every
 * draw from the generator's rng happens in a fixed order, and a body that
 * would pass 10 MB drops its last record (its draws stay drawn): changing
 * either changes the data every recorded figure was measured on.
 */
#include "config.h"

#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "gen.h"
#include "kinesis.h"
#include "kpl.h"

#define GEN_BODY_CAP ((size_t)10 * 1000 * 1000)

static const char *const pages[] = {
	"/", "/search?q=running+shoes", "/cart", "/checkout", "/checkout/payment",
	"/account/orders", "/products/shoes/running/aurora-3", "/products/jackets/rain/storm-shell",
	"/products/bags/backpacks/daypack-22", "/blog/choosing-trail-shoes", "/help/returns",
};
static const char *const types[] = {
	"page_view", "click", "scroll", "add_to_cart", "search", "begin_checkout", "purchase",
};
static const char *const agents[] = {
	"Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
	"Chrome/124.0.0.0 Safari/537.36",
	"Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, "
	"like Gecko) Version/17.4 Mobile/15E148 Safari/604.1",
	"Mozilla/5.0 (X11; Linux x86_64; rv:125.0) Gecko/20100101 Firefox/125.0",
	"Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) "
	"Chrome/124.0.6367.82 Mobile Safari/537.36",
};
static const char *const countries[] = { "DE", "US", "FR", "GB", "NL", "SE", "JP", "BR" };

#define PICK(rng, a) ((a)[kl_rng_below((rng), KL_ARRAY_LEN(a))])

enum kl_err gen_event(struct kl_rng *rng, int64_t ms, struct buf *out)
{
	uint64_t id = kl_rng_next(rng);
	time_t secs = (time_t)(ms / 1000);
	bool bot = kl_rng_below(rng, 50) == 0;
	struct tm tm;
	char when[32];

	gmtime_r(&secs, &tm);
	strftime(when, sizeof(when), "%Y-%m-%dT%H:%M:%S", &tm);
	return buf_printf(out,
			  "{\"event_id\":\"%016" PRIx64 "\",\"timestamp\":\"%s.%03dZ\",\"type\":\"%s\","
			  "\"user_id\":\"u-%07" PRIu64 "\",\"session_id\":\"s-%012" PRIx64 "\","
			  "\"page\":\"%s\",\"user_agent\":\"%s\",\"ip\":\"203.0.%d.%d\","
			  "\"country\":\"%s\",\"value_cents\":%d,"
			  "\"props\":{\"sku\":\"SKU-%05d\",\"qty\":%d}}",
			  id, when, (int)(ms % 1000), PICK(rng, types), kl_rng_below(rng, 5000000),
			  id >> 16, PICK(rng, pages),
			  bot ? "Mozilla/5.0 (compatible; bingbot/2.0; +http://www.bing.com/bingbot.htm)" :
				PICK(rng, agents),
			  (int)kl_rng_below(rng, 256), (int)kl_rng_below(rng, 256), PICK(rng, countries),
			  (int)kl_rng_below(rng, 20000), (int)kl_rng_below(rng, 100000),
			  1 + (int)kl_rng_below(rng, 4));
}

void gen_init(struct gen *g, uint64_t seed, int agg_every, int agg_size)
{
	memset(g, 0, sizeof(*g));
	g->ms = INT64_C(1795291116903);
	g->agg_every = agg_every;
	g->agg_size = agg_size;
	buf_init(&g->rec, 0);
	buf_init(&g->b64, 0);
	for (int i = 0; i < GEN_AGG_MAX; i++)
		buf_init(&g->ev[i], 0);
	kl_rng_seed_value(&g->rng, seed);
}

void gen_done(struct gen *g)
{
	buf_done(&g->rec);
	buf_done(&g->b64);
	for (int i = 0; i < GEN_AGG_MAX; i++)
		buf_done(&g->ev[i]);
}

/* The next Kinesis record into g->rec: an aggregate or one event. */
static enum kl_err gen_record(struct gen *g, size_t *ret_user, size_t *ret_payload)
{
	struct kpl_enc_record sub[GEN_AGG_MAX];
	char pks[GEN_AGG_MAX][24];
	size_t payload = 0;
	enum kl_err err;

	buf_reset(&g->rec);
	if (!(g->agg_every &&
	      g->n_records % (size_t)g->agg_every == (size_t)g->agg_every - 1)) {
		err = gen_event(&g->rng, g->ms, &g->rec);
		*ret_user = 1;
		*ret_payload = g->rec.len;
		return err;
	}
	for (int i = 0; i < g->agg_size; i++) {
		buf_reset(&g->ev[i]);
		err = gen_event(&g->rng, g->ms, &g->ev[i]);
		if (err)
			return err;
		snprintf(pks[i], sizeof(pks[i]), "u-%07" PRIu64, kl_rng_below(&g->rng, 5000000));
		sub[i].partition_key = pks[i];
		sub[i].explicit_hash_key = NULL;
		sub[i].data = g->ev[i].data;
		sub[i].len = g->ev[i].len;
		payload += g->ev[i].len;
	}
	*ret_user = (size_t)g->agg_size;
	*ret_payload = payload;
	return kpl_encode(sub, (size_t)g->agg_size, &g->rec);
}

enum kl_err gen_page(struct gen *g, struct buf *body, const char *next_iterator)
{
	static const char seqbase[] = "49590338271490256608559692538361571095921575989";
	size_t in_page = 0;
	enum kl_err err;

	buf_init(body, 32 << 20);
	err = buf_append_str(body, "{\"Records\":[");
	while (!err && in_page < KINESIS_GET_RECORDS_MAX) {
		size_t mark = body->len, user, payload;

		err = gen_record(g, &user, &payload);
		if (err)
			break;
		g->ms += (int64_t)kl_rng_below(&g->rng, 5);
		buf_reset(&g->b64);
		err = buf_reserve(&g->b64, KL_B64_ENCLEN(g->rec.len) + 1);
		if (err)
			break;
		kl_b64_encode((const uint8_t *)g->rec.data, g->rec.len, g->b64.data);
		err = buf_printf(body,
				 "%s{\"SequenceNumber\":\"%s%09zu\",\"ApproximateArrivalTimestamp\":%"
				 PRId64 ".%03d,\"Data\":\"%s\",\"PartitionKey\":\"u-%07" PRIu64 "\"}",
				 in_page ? "," : "", seqbase, (g->n_records + 1) * 10, g->ms / 1000,
				 (int)(g->ms % 1000), g->b64.data, kl_rng_below(&g->rng, 5000000));
		if (err)
			break;
		if (body->len > GEN_BODY_CAP - 400) {
			body->len = mark;
			body->data[mark] = '\0';
			break;
		}
		in_page++;
		g->n_records++;
		g->n_user += user;
		g->payload += payload;
		g->data_bytes += g->rec.len;
	}
	if (!err)
		err = buf_printf(body, "],\"NextShardIterator\":\"%s\",\"MillisBehindLatest\":0}",
				 next_iterator);
	return err;
}
