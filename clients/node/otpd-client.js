'use strict';
// A small publisher for otpd (docs/job-v1.md), on amqplib.
//
// It builds a send-code job, signs it when given a key (the `otpd-signature` v2 scheme),
// publishes it on a confirm channel, and can wait for the challenge's status events:
//
//   const otpd = await Publisher.connect('amqp://guest:guest@127.0.0.1:5672/%2f');
//   const j = job({ channel: 'sms', to: '+14155550123', code: '271828', accountId: 'user-1' });
//   const events = await otpd.watch(j.challenge_id);
//   await otpd.publish(j);
//   console.log(await events.terminal(30000));
//   await otpd.close();

const crypto = require('node:crypto');
const amqp = require('amqplib');

const SIGNATURE_HEADER = 'otpd-signature';
// A challenge's job ends in one of these; receipts may later move `sent` on.
const TERMINAL = new Set(['sent', 'delivered', 'undelivered', 'failed', 'expired', 'rate_limited', 'rejected']);

/** The otpd-signature header: HMAC-SHA256 over "<t>\n<type>\n<body>". */
function sign(body, keyId, key, kind = '', now = Math.floor(Date.now() / 1000)) {
  const mac = crypto.createHmac('sha256', key).update(`${now}\n${kind}\n`).update(body).digest('hex');
  return `t=${now},kid=${keyId},v2=${mac}`;
}

/** A version 1 job; `challengeId` defaults to a fresh one (it is the idempotency key). */
function job({ channel, to, code, accountId, challengeId, ttlSecs = 300, locale, template, metadata, clientIp }) {
  const j = {
    version: 1,
    challenge_id: challengeId || `js-${crypto.randomUUID()}`,
    account_id: accountId,
    channel,
    to,
    code,
    expires_at: new Date(Date.now() + ttlSecs * 1000).toISOString(),
  };
  if (locale !== undefined) j.locale = locale;
  if (template !== undefined) j.template = template;
  if (metadata !== undefined) j.metadata = metadata;
  if (clientIp !== undefined) j.client_ip = clientIp;
  return j;
}

class Publisher {
  static async connect(url = 'amqp://guest:guest@127.0.0.1:5672/%2f', options = {}) {
    const connection = await amqp.connect(url);
    const channel = await connection.createConfirmChannel();
    return new Publisher(connection, channel, options);
  }

  constructor(connection, channel, { jobsExchange = 'otpd.jobs', eventsExchange = 'otpd.events', keyId, key } = {}) {
    this.connection = connection;
    this.channel = channel;
    this.jobsExchange = jobsExchange;
    this.eventsExchange = eventsExchange;
    this.key = keyId && key ? { keyId, key } : null;
  }

  /** Starts listening for a challenge's events; call it before publishing the job. */
  async watch(challengeId) {
    const ch = await this.connection.createChannel();
    const { queue } = await ch.assertQueue('', { exclusive: true, autoDelete: true });
    await ch.bindQueue(queue, this.eventsExchange, 'delivery.#');
    const waiting = [];
    const seen = [];
    await ch.consume(queue, (msg) => {
      if (!msg) return;
      const event = JSON.parse(msg.content.toString());
      if (event.challenge_id !== challengeId || !TERMINAL.has(event.state)) return;
      seen.push(event);
      while (waiting.length) waiting.shift()(event);
    }, { noAck: true });
    return {
      /** The challenge's first terminal event; rejects if none comes within `timeoutMs`. */
      terminal: (timeoutMs = 30000) => new Promise((resolve, reject) => {
        const done = (event) => { clearTimeout(timer); ch.close().catch(() => {}); resolve(event); };
        const timer = setTimeout(() => reject(new Error(`no terminal event for ${challengeId} in ${timeoutMs} ms`)), timeoutMs);
        if (seen.length) done(seen[0]); else waiting.push(done);
      }),
    };
  }

  /** Publishes a job; resolves once the broker confirms it. */
  publish(j) {
    return this.send(Buffer.from(JSON.stringify(j)), j.channel, j.challenge_id, '');
  }

  /** Reports that the challenge's code was entered correctly. */
  verified(challengeId) {
    return this.feedback('verified', challengeId);
  }

  /** Abandons the challenge: its pending fallback steps are not sent. */
  cancel(challengeId) {
    return this.feedback('cancel', challengeId);
  }

  feedback(kind, challengeId) {
    const body = Buffer.from(JSON.stringify({ version: 1, challenge_id: challengeId }));
    return this.send(body, kind, challengeId, kind);
  }

  send(body, routingKey, messageId, kind) {
    const headers = {};
    if (this.key) headers[SIGNATURE_HEADER] = sign(body, this.key.keyId, this.key.key, kind);
    const options = { contentType: 'application/json', persistent: true, messageId, headers, mandatory: true };
    if (kind) options.type = kind;
    return new Promise((resolve, reject) => {
      this.channel.publish(this.jobsExchange, routingKey, body, options, (err) => (err ? reject(err) : resolve()));
    });
  }

  async close() {
    await this.channel.close();
    await this.connection.close();
  }
}

module.exports = { Publisher, job, sign, SIGNATURE_HEADER, TERMINAL };
