'use strict';
// Publishes one job and prints its terminal event as JSON; exits 0 if it was sent.
//   node send.js --to +14155550123 --code 271828 [--channel sms] [--account-id A] [--url amqp://…]
//     [--jobs-exchange otpd.jobs] [--events-exchange otpd.events] [--key-id k1 --key SECRET]
const { parseArgs } = require('node:util');
const { Publisher, job } = require('./otpd-client');

async function main() {
  const { values: a } = parseArgs({
    options: {
      url: { type: 'string', default: 'amqp://guest:guest@127.0.0.1:5672/%2f' },
      'jobs-exchange': { type: 'string', default: 'otpd.jobs' },
      'events-exchange': { type: 'string', default: 'otpd.events' },
      channel: { type: 'string', default: 'sms' },
      to: { type: 'string' },
      code: { type: 'string' },
      'account-id': { type: 'string', default: 'demo-account' },
      'key-id': { type: 'string' },
      key: { type: 'string' },
      'timeout-ms': { type: 'string', default: '30000' },
    },
  });
  const otpd = await Publisher.connect(a.url, {
    jobsExchange: a['jobs-exchange'], eventsExchange: a['events-exchange'], keyId: a['key-id'], key: a.key,
  });
  try {
    const j = job({ channel: a.channel, to: a.to, code: a.code, accountId: a['account-id'] });
    const events = await otpd.watch(j.challenge_id);
    await otpd.publish(j);
    const event = await events.terminal(Number(a['timeout-ms']));
    console.log(JSON.stringify(event));
    process.exitCode = event.state === 'sent' ? 0 : 1;
  } finally {
    await otpd.close();
  }
}

main().catch((e) => { console.error(e); process.exit(2); });
