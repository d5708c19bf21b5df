import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { buildFailedMessage, isOptOut, NativeBuildDecision, planNativeBuild, type NativeBuildProbes } from '../../scripts/planNativeBuild.js';

interface Machine {
  optOut?: string;
  platform?: NodeJS.Platform;
  arch?: string;
  cmake?: boolean;
  compiler?: string;
  nativeLoads?: boolean;
}

/** Probes of a pretend machine that record which ones ran. */
function probes(machine: Machine): { probes: NativeBuildProbes; ran: string[] } {
  const ran: string[] = [];
  return {
    ran,
    probes: {
      optOut: machine.optOut,
      platform: machine.platform ?? 'linux',
      arch: machine.arch ?? 'x64',
      hasCmake: async () => { ran.push('cmake'); return machine.cmake ?? true; },
      findCompiler: async () => { ran.push('compiler'); return 'compiler' in machine ? machine.compiler : 'c++'; },
      nativeBuildLoads: async () => { ran.push('native'); return machine.nativeLoads ?? false; },
    },
  };
}

describe('planNativeBuild', () => {
  test('a Linux machine with cmake, a compiler and no native build builds one, and says it takes minutes and how to skip it', async () => {
    const { probes: machine, ran } = probes({});
    const plan = await planNativeBuild(machine);
    assert.equal(plan.decision, NativeBuildDecision.build);
    assert.match(plan.message, /minutes/);
    assert.match(plan.message, /PARLEY_NATIVE_BUILD=0/);
    assert.deepEqual(ran, ['native', 'cmake', 'compiler']);
  });

  test('an up-to-date native build that loads is not rebuilt, and the toolchain is not even probed', async () => {
    const { probes: machine, ran } = probes({ nativeLoads: true, cmake: false });
    const plan = await planNativeBuild(machine);
    assert.equal(plan.decision, NativeBuildDecision.upToDate);
    assert.deepEqual(ran, ['native']);
  });

  test('without cmake, or without a C++ compiler, it says the prebuilt binary runs and how to get the faster one', async () => {
    for (const [machine, decision] of [[{ cmake: false }, NativeBuildDecision.noCmake], [{ compiler: undefined }, NativeBuildDecision.noCompiler]] as const) {
      const plan = await planNativeBuild(probes(machine).probes);
      assert.equal(plan.decision, decision);
      assert.match(plan.message, /prebuilt/);
      assert.match(plan.message, /npm run build:llama/);
      assert.match(plan.message, /cmake and a C\+\+ compiler/);
      assert.doesNotMatch(plan.message, /\n/);
    }
  });

  test('PARLEY_NATIVE_BUILD=0 (or false, no, off) skips everything, probes included', async () => {
    for (const value of ['0', 'false', 'NO', ' off ']) {
      const { probes: machine, ran } = probes({ optOut: value });
      const plan = await planNativeBuild(machine);
      assert.equal(plan.decision, NativeBuildDecision.optedOut);
      assert.match(plan.message, /npm run build:llama/);
      assert.deepEqual(ran, []);
    }
    for (const value of [undefined, '', '1', 'yes']) assert.equal(isOptOut(value), false, `PARLEY_NATIVE_BUILD=${value}`);
  });

  test('Apple silicon runs on Metal, so no CPU build is made; Intel Macs, Windows and Linux on arm64 build one', async () => {
    const mac = probes({ platform: 'darwin', arch: 'arm64' });
    assert.equal((await planNativeBuild(mac.probes)).decision, NativeBuildDecision.gpuPlatform);
    assert.deepEqual(mac.ran, []);
    for (const [platform, arch] of [['darwin', 'x64'], ['win32', 'x64'], ['linux', 'arm64']] as const) {
      assert.equal((await planNativeBuild(probes({ platform, arch }).probes)).decision, NativeBuildDecision.build, `${platform} ${arch}`);
    }
  });

  test('a failed build is one line naming the reason, the prebuilt binary and the way to retry', () => {
    const message = buildFailedMessage('cmake exited with 1\n  CMake Error at CMakeLists.txt:3\n');
    assert.doesNotMatch(message, /\n/);
    assert.match(message, /cmake exited with 1 CMake Error at CMakeLists.txt:3/);
    assert.match(message, /prebuilt/);
    assert.match(message, /npm run build:llama/);
    assert.ok(buildFailedMessage('x'.repeat(10_000)).length < 600);
  });
});
