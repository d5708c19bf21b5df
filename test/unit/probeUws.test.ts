import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { probeUws, UWS_PACKAGES, type UwsProbeDeps, type UwsTarget } from '../../server/transport/loadUws.js';

const NODE_24: UwsTarget = { platform: 'linux', arch: 'x64', modules: '137', node: '24.22.3' };
const NODE_20: UwsTarget = { platform: 'linux', arch: 'x64', modules: '115', node: '20.20.2' };

const V57_DIR = '/nm/@btc-vision/uwebsockets.js';
const V30_DIR = '/nm/@trufflesuite/uws-js-unofficial';
const NATIVE = { App: () => undefined, SSLApp: () => undefined };
/** What v20.30's JS emulation exports: no SSLApp. */
const EMULATION = { App: () => undefined, us_listen_socket_close: () => undefined };
const GLIBC = "/lib/x86_64-linux-gnu/libc.so.6: version `GLIBC_2.38' not found (required by /nm/@btc-vision/uwebsockets.js/uws_linux_x64_115.node)";

/** A node_modules with the given binaries; `loads` maps a binary to what loading it gives or throws. */
function deps(binaries: Record<string, unknown>, installed = [V57_DIR, V30_DIR]): UwsProbeDeps & { loaded: string[] } {
  const loaded: string[] = [];
  return {
    loaded,
    resolve(specifier) {
      if (specifier === '@btc-vision/uwebsockets.js') return installed.includes(V57_DIR) ? `${V57_DIR}/uws.js` : undefined;
      if (specifier === '@trufflesuite/uws-js-unofficial/package.json') return installed.includes(V30_DIR) ? `${V30_DIR}/package.json` : undefined;
      return undefined;
    },
    exists: (path) => path in binaries,
    load(path) {
      loaded.push(path);
      const result = binaries[path];
      if (result instanceof Error) throw result;
      return result;
    },
  };
}

describe('probeUws', () => {
  test('v20.57 wins where its binary loads, and v20.30 is never loaded beside it', () => {
    const found = deps({ [`${V57_DIR}/uws_linux_x64_137.node`]: NATIVE });
    const result = probeUws(UWS_PACKAGES, NODE_24, found);
    assert.equal(result.native, true);
    assert.ok(result.native);
    assert.equal(result.version, '20.57');
    assert.equal(result.binary, `${V57_DIR}/uws_linux_x64_137.node`);
    assert.deepEqual(result.skipped, []);
    assert.deepEqual(found.loaded, [`${V57_DIR}/uws_linux_x64_137.node`]);
  });

  test('on Node 20 with an older glibc, v20.57 fails to load and v20.30 runs; the reason names the glibc', () => {
    const found = deps({
      [`${V57_DIR}/uws_linux_x64_115.node`]: new Error(`${GLIBC}\n    at Module._extensions..node`),
      [`${V30_DIR}/binaries/uws_linux_x64_115.node`]: NATIVE,
    });
    const result = probeUws(UWS_PACKAGES, NODE_20, found);
    assert.ok(result.native);
    assert.equal(result.version, '20.30');
    assert.equal(result.binary, `${V30_DIR}/binaries/uws_linux_x64_115.node`);
    assert.equal(result.skipped.length, 1);
    assert.match(result.skipped[0] ?? '', /^v20\.57 \(@btc-vision\/uwebsockets\.js\): .*GLIBC_2\.38' not found/);
    assert.doesNotMatch(result.skipped[0] ?? '', /Module\._extensions/, 'only the first line of the load error');
  });

  test('on Node 24 with an older glibc there is no native uWS: both reasons are given', () => {
    const found = deps({ [`${V57_DIR}/uws_linux_x64_137.node`]: new Error(GLIBC) });
    const result = probeUws(UWS_PACKAGES, NODE_24, found);
    assert.equal(result.native, false);
    assert.ok(!result.native);
    assert.match(result.reason, /v20\.57 .*GLIBC_2\.38/);
    assert.match(result.reason, /v20\.30 \(@trufflesuite\/uws-js-unofficial\): no binary for linux-x64 Node ABI 137 \(Node 24\.22\.3\)/);
  });

  test('a binary that loads without SSLApp (a JS emulation) is not native, and the next package is tried', () => {
    const found = deps({
      [`${V57_DIR}/uws_linux_x64_115.node`]: EMULATION,
      [`${V30_DIR}/binaries/uws_linux_x64_115.node`]: EMULATION,
    });
    const result = probeUws(UWS_PACKAGES, NODE_20, found);
    assert.ok(!result.native);
    assert.match(result.reason, /v20\.57 .*did not export the native uWS API; v20\.30 .*did not export the native uWS API/);
    assert.equal(found.loaded.length, 2);
  });

  test('a package that is not installed is skipped with that reason', () => {
    const found = deps({ [`${V30_DIR}/binaries/uws_linux_x64_115.node`]: NATIVE }, [V30_DIR]);
    const result = probeUws(UWS_PACKAGES, NODE_20, found);
    assert.ok(result.native);
    assert.equal(result.version, '20.30');
    assert.deepEqual(result.skipped, ['v20.57 (@btc-vision/uwebsockets.js): not installed']);
  });
});
