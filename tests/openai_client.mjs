// Drives a running `shoal node` with the official OpenAI client for Node.js
// (npm `openai`, pinned in tests/npm), unchanged: only baseURL points at the
// node. Run by the integration test "openai: the official openai npm client
// works unchanged" (tests/openai_e2e.test.cpp), which starts the node.
//
// Usage: node tests/openai_client.mjs <node url> <openai package dir>
// Prints one "ok - <what>" line per check; exits 1 on the first failure with
// the reason on stderr.
import assert from 'node:assert/strict';
import { pathToFileURL } from 'node:url';
import path from 'node:path';

const [url, pkgDir] = process.argv.slice(2);
if (!url || !pkgDir) {
  console.error('usage: node tests/openai_client.mjs <node url> <openai package dir>');
  process.exit(2);
}
const { default: OpenAI } = await import(pathToFileURL(path.join(pkgDir, 'index.mjs')).href);

// A key is required by the client; the node does not check it.
const client = new OpenAI({ baseURL: `${url}/v1`, apiKey: 'sk-shoal-test', maxRetries: 0,
                            timeout: 60_000 });

async function check(what, fn) {
  try {
    await fn();
    console.log(`ok - ${what}`);
  } catch (err) {
    console.error(`not ok - ${what}\n${err?.stack ?? err}`);
    process.exit(1);
  }
}

const messages = [
  { role: 'system', content: 'You are brief.' },
  { role: 'user', content: 'Name a Debian release.' },
];

await check('models.list() lists the tiers and auto', async () => {
  const ids = [];
  for await (const m of client.models.list()) ids.push(m.id);
  assert.ok(ids.includes('auto'), `ids: ${ids}`);
  assert.ok(ids.includes('demo-15m'), `ids: ${ids}`);
});

let chatText;
await check('chat.completions.create() answers with usage', async () => {
  const r = await client.chat.completions.create({
    model: 'demo-15m', messages, max_tokens: 8, temperature: 0,
  });
  assert.equal(r.object, 'chat.completion');
  assert.equal(r.model, 'demo-15m');
  assert.equal(r.choices.length, 1);
  assert.equal(r.choices[0].message.role, 'assistant');
  assert.equal(typeof r.choices[0].message.content, 'string');
  assert.ok(['length', 'stop'].includes(r.choices[0].finish_reason));
  assert.ok(r.usage.prompt_tokens > 5);
  assert.ok(r.usage.completion_tokens >= 1 && r.usage.completion_tokens <= 8);
  assert.equal(r.usage.total_tokens, r.usage.prompt_tokens + r.usage.completion_tokens);
  chatText = r.choices[0].message.content;
});

await check('a streamed chat (greedy) yields the same text, then usage', async () => {
  const stream = await client.chat.completions.create({
    model: 'demo-15m', messages, max_tokens: 8, temperature: 0, stream: true,
    stream_options: { include_usage: true },
  });
  let text = '', chunks = 0, finish = null, usage = null, role = null;
  for await (const chunk of stream) {
    assert.equal(chunk.object, 'chat.completion.chunk');
    if (chunk.usage) usage = chunk.usage;
    for (const c of chunk.choices) {
      chunks++;
      role ??= c.delta.role ?? null;
      text += c.delta.content ?? '';
      finish = c.finish_reason ?? finish;
    }
  }
  assert.equal(role, 'assistant');
  assert.ok(chunks >= 2, `chunks: ${chunks}`);
  assert.equal(text, chatText);
  assert.ok(['length', 'stop'].includes(finish));
  assert.ok(usage && usage.completion_tokens >= 1);
});

await check('the stream helper (chat.completions.stream) assembles the message', async () => {
  const runner = client.chat.completions.stream({
    model: 'demo-15m', messages, max_tokens: 8, temperature: 0,
  });
  const final = await runner.finalChatCompletion();
  assert.equal(final.choices[0].message.content, chatText);
});

await check('completions.create() with logprobs', async () => {
  const r = await client.completions.create({
    model: 'demo-tiny', prompt: 'Debian is', max_tokens: 4, temperature: 0, logprobs: 2,
  });
  assert.equal(r.object, 'text_completion');
  const lp = r.choices[0].logprobs;
  assert.equal(lp.tokens.length, 4);
  assert.ok(lp.token_logprobs.every((x) => x <= 0));
  assert.ok(lp.top_logprobs.every((t) => Object.keys(t).length <= 2));
});

await check('embeddings.create() (the client asks for base64 and decodes it)', async () => {
  const input = ['the KV cache is paged', 'apt-get install nats-server'];
  const r = await client.embeddings.create({ model: 'demo-tiny', input });
  assert.equal(r.data.length, 2);
  const dim = r.data[0].embedding.length;
  assert.ok(dim > 0);
  assert.equal(r.data[1].embedding.length, dim);
  assert.ok(r.data[0].embedding.every(Number.isFinite));
  assert.ok(r.usage.prompt_tokens > 0);
  // The same vectors as floats.
  const f = await client.embeddings.create({ model: 'demo-tiny', input,
                                             encoding_format: 'float' });
  for (let i = 0; i < 2; i++)
    for (let j = 0; j < dim; j++)
      assert.ok(Math.abs(f.data[i].embedding[j] - r.data[i].embedding[j]) < 1e-6);
});

await check('unknown model: NotFoundError with code model_not_found', async () => {
  await assert.rejects(
    client.chat.completions.create({ model: 'gpt-9', messages }),
    (err) => err instanceof OpenAI.NotFoundError && err.status === 404 &&
             err.code === 'model_not_found' && err.param === 'model');
});

await check('bad sampling parameter: BadRequestError naming it', async () => {
  await assert.rejects(
    client.chat.completions.create({ model: 'demo-tiny', messages, temperature: 5 }),
    (err) => err instanceof OpenAI.BadRequestError && err.param === 'temperature');
});

await check('context overflow: BadRequestError context_length_exceeded', async () => {
  await assert.rejects(
    client.completions.create({ model: 'demo-tiny', prompt: 'lorem ipsum '.repeat(400) }),
    (err) => err instanceof OpenAI.BadRequestError && err.code === 'context_length_exceeded');
});

await check('aborting a stream mid-way, then the node keeps serving', async () => {
  const ac = new AbortController();
  const stream = await client.completions.create(
    { model: 'demo-110m', prompt: 'a long story', max_tokens: 2000, stream: true },
    { signal: ac.signal });
  // The client ends the iteration quietly (or with APIUserAbortError) once
  // the signal fires; the node sees the connection close.
  let n = 0;
  try {
    for await (const _ of stream) {
      if (++n === 3) ac.abort();
    }
  } catch (err) {
    assert.ok(err instanceof OpenAI.APIUserAbortError || err.name === 'AbortError', String(err));
  }
  assert.equal(n, 3);
  const r = await client.completions.create({ model: 'demo-110m', prompt: 'again', max_tokens: 2 });
  assert.equal(r.usage.completion_tokens, 2);
});
