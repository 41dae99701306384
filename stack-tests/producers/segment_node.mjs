// Sends a track, an identify and a page call to Eventline with Segment's Node SDK
// (@segment/analytics-node), as a user would configure it. Exits non-zero when the SDK
// reports an error. Usage: node segment_node.mjs HOST WRITE_KEY
import { Analytics } from '@segment/analytics-node'

const [host, writeKey] = process.argv.slice(2)
const analytics = new Analytics({ writeKey, host, path: '/v1/batch', flushAt: 3, maxRetries: 2 })
const errors = []
analytics.on('error', (error) => errors.push(String(error?.reason ?? error?.message ?? error)))

analytics.track({ userId: 'node-user', event: 'Signed Up', properties: { referrer: 'ad' }, messageId: 'node-track-1' })
analytics.identify({ userId: 'node-user', traits: { plan: 'team' }, messageId: 'node-identify-1' })
analytics.page({ userId: 'node-user', name: 'Pricing', properties: { path: '/pricing' }, messageId: 'node-page-1' })
await analytics.closeAndFlush({ timeout: 20000 })

if (errors.length > 0) {
  console.log(JSON.stringify(errors))
  process.exit(1)
}
