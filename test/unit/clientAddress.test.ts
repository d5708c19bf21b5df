import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { clientAddress, compileTrustProxy, forwardedHttps, isTrustProxyEntry, trustNoProxy } from '../../server/transport/clientAddress.js';
import { loadConfig } from '../../server/config.js';

const xff = (value: string) => ({ 'x-forwarded-for': value });

describe('clientAddress', () => {
  const balancer = compileTrustProxy(['10.0.0.5']);

  test('a trusted peer: the rightmost X-Forwarded-For address, whatever the client wrote to its left', () => {
    assert.equal(clientAddress('10.0.0.5', xff('203.0.113.7'), balancer), '203.0.113.7');
    // nginx's $proxy_add_x_forwarded_for appends the real peer to what the client sent.
    assert.equal(clientAddress('10.0.0.5', xff('127.0.0.1, 198.51.100.9,203.0.113.7'), balancer), '203.0.113.7');
  });

  test('an untrusted peer: X-Forwarded-For is ignored, so a client cannot claim another address', () => {
    assert.equal(clientAddress('198.51.100.9', xff('203.0.113.7'), balancer), '198.51.100.9');
    assert.equal(clientAddress('127.0.0.1', xff('203.0.113.7'), trustNoProxy), '127.0.0.1');
    assert.equal(clientAddress('127.0.0.1', xff('203.0.113.7'), compileTrustProxy([])), '127.0.0.1');
  });

  test('a trusted peer with no X-Forwarded-For is the client itself', () => {
    assert.equal(clientAddress('10.0.0.5', {}, balancer), '10.0.0.5');
    assert.equal(clientAddress('10.0.0.5', xff(''), balancer), '10.0.0.5');
  });

  test('several trusted hops are walked right to left; the first untrusted one is the client', () => {
    const hops = compileTrustProxy(['10.0.0.5', '10.0.1.0/24']);
    assert.equal(clientAddress('10.0.0.5', xff('198.51.100.1, 203.0.113.7, 10.0.1.20, 10.0.1.21'), hops), '203.0.113.7');
    // A hop outside the trusted ranges stops the walk, even if trusted ones follow on its left.
    assert.equal(clientAddress('10.0.0.5', xff('10.0.1.9, 198.51.100.1, 10.0.1.20'), hops), '198.51.100.1');
    // Every hop trusted: the leftmost is as far as anyone can tell.
    assert.equal(clientAddress('10.0.0.5', xff('10.0.1.9, 10.0.1.20'), hops), '10.0.1.9');
  });

  test('a CIDR range trusts every peer inside it and none outside', () => {
    const range = compileTrustProxy(['10.0.1.0/24']);
    assert.equal(clientAddress('10.0.1.200', xff('203.0.113.7'), range), '203.0.113.7');
    assert.equal(clientAddress('10.0.2.1', xff('203.0.113.7'), range), '10.0.2.1');
  });

  test('a malformed X-Forwarded-For from a trusted peer gives the peer, never an exception', () => {
    for (const header of ['not-an-address', '203.0.113.7:443', '[2001:db8::1]', '127.1', '999.1.1.1', 'a, b, ,', ',,,', '203.0.113.7, <script>']) {
      assert.equal(clientAddress('10.0.0.5', xff(header), balancer), '10.0.0.5', header);
    }
    // Garbage to the left of a good rightmost entry does not matter.
    assert.equal(clientAddress('10.0.0.5', xff('garbage, 203.0.113.7'), balancer), '203.0.113.7');
    // An odd peer (a socket already gone reports none) is passed through.
    assert.equal(clientAddress('', xff('203.0.113.7'), balancer), '');
  });

  test('IPv6: peers and forwarded addresses; an IPv4-mapped peer matches an IPv4 rule; results are canonical', () => {
    const v6 = compileTrustProxy(['2001:db8::/64', '10.0.0.5']);
    assert.equal(clientAddress('2001:db8::10', xff('2001:DB8:1:0:0:0:0:1'), v6), '2001:db8:1::1');
    // uWS writes IPv6 peers in full; a dual-stack listener writes IPv4 peers as IPv4-mapped.
    assert.equal(clientAddress('2001:0db8:0000:0000:0000:0000:0000:0010', xff('203.0.113.7'), v6), '203.0.113.7');
    assert.equal(clientAddress('::ffff:10.0.0.5', xff('203.0.113.7'), v6), '203.0.113.7');
    // An IPv4-mapped forwarded address is the same client as its IPv4 form.
    assert.equal(clientAddress('10.0.0.5', xff('::ffff:203.0.113.7'), v6), '203.0.113.7');
    assert.equal(clientAddress('2001:db8:1::1', xff('203.0.113.7'), v6), '2001:db8:1::1', 'outside the range: not trusted');
    const loopback = compileTrustProxy(['loopback']);
    assert.equal(clientAddress('::1', xff('2001:db8::7'), loopback), '2001:db8::7');
    assert.equal(clientAddress('127.0.0.1', xff('2001:db8::7'), loopback), '2001:db8::7');
    assert.equal(clientAddress('::ffff:127.0.0.1', xff('2001:db8::7'), loopback), '2001:db8::7');
  });
});

describe('forwardedHttps', () => {
  const balancer = compileTrustProxy(['10.0.0.5']);

  test('believed from a trusted peer only, by its first value', () => {
    assert.equal(forwardedHttps('10.0.0.5', { 'x-forwarded-proto': 'https' }, balancer), true);
    assert.equal(forwardedHttps('10.0.0.5', { 'x-forwarded-proto': 'HTTPS, http' }, balancer), true);
    assert.equal(forwardedHttps('10.0.0.5', { 'x-forwarded-proto': 'http' }, balancer), false);
    assert.equal(forwardedHttps('10.0.0.5', {}, balancer), false);
    assert.equal(forwardedHttps('198.51.100.9', { 'x-forwarded-proto': 'https' }, balancer), false);
  });
});

describe('trustProxy config', () => {
  test('addresses, CIDR ranges and the named ranges are accepted', () => {
    for (const entry of ['10.0.0.5', '10.0.1.0/24', '2001:db8::/32', '::1', 'loopback', 'linklocal', 'uniquelocal', '10.0.0.0/255.255.255.0']) {
      assert.equal(isTrustProxyEntry(entry), true, entry);
    }
    assert.deepEqual(loadConfig({ trustProxy: '10.0.0.5, 10.0.1.0/24,loopback' }).trustProxy, ['10.0.0.5', '10.0.1.0/24', 'loopback']);
    assert.deepEqual(loadConfig({}).trustProxy, []);
  });

  test('a bad entry fails the start, naming it', () => {
    for (const entry of ['balancer.local', '10.0.0.0/33', '10.0.0', '*', '']) assert.equal(isTrustProxyEntry(entry), false, entry);
    assert.throws(() => loadConfig({ trustProxy: ['10.0.0.5', 'balancer.local'] }), (error: Error) => {
      assert.match(error.message, /trustProxy\.1: 'balancer\.local' is not an IP address/);
      return true;
    });
  });
});
