import { spawnSync } from 'child_process';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';

import { SafetensorsError, Tensor, parseSafetensors, readSafetensors, serializeSafetensors, writeSafetensors } from '../lib';
import { binding } from '../lib/binding';
import { readSafetensorsMetadata } from '../lib/safetensors';

function file(header: unknown, data: Uint8Array = new Uint8Array(0), lengthOverride?: bigint): Buffer {
  const json = Buffer.from(typeof header === 'string' ? header : JSON.stringify(header));
  const head = Buffer.alloc(8);
  head.writeBigUInt64LE(lengthOverride ?? BigInt(json.length));
  return Buffer.concat([head, json, data]);
}

describe('safetensors', () => {
  test('round trip of every dtype, with metadata, through a file', async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'pirl-st-'));
    const tensors: Array<[string, Tensor]> = [
      ['a.weight', Tensor.from(new Float32Array([1.5, -2, 3, 4]), [2, 2])],
      ['b', Tensor.from(new Float64Array([Math.PI]), [1])],
      ['c', Tensor.from(new BigInt64Array([7n, -9n]), [2])],
      ['d', Tensor.from(new Int32Array([1, 2, 3]), [3])],
      ['e', Tensor.from(new Uint8Array([255, 0, 1]), [1, 3])],
      ['empty', Tensor.from(new Float32Array(0), [0, 4])],
    ];
    const target = path.join(dir, 'x.safetensors');
    await writeSafetensors(target, tensors, { note: 'hi' });
    expect(fs.readdirSync(dir)).toEqual(['x.safetensors']); // the temporary file was renamed
    // A name or a metadata key '__proto__' is a name like another (as an object's key it set the prototype, and was lost).
    const odd = path.join(dir, 'odd.safetensors');
    await writeSafetensors(odd, [['__proto__', Tensor.from(new Float32Array([5]))]], JSON.parse('{"__proto__": "kept"}'));
    const oddBack = await readSafetensors(odd);
    expect([[...oddBack.tensors.keys()], [...oddBack.tensors.get('__proto__')!.data()], Object.entries(oddBack.metadata)]).toEqual([['__proto__'], [5], [['__proto__', 'kept']]]);
    fs.rmSync(odd);
    // A folder or a FIFO at the path is refused, naming the file, and left as it was (the rename would have replaced
    // the FIFO, as root /dev/null too); no temporary file stays.
    const folder = path.join(dir, 'taken.safetensors');
    fs.mkdirSync(path.join(folder, 'inside'), { recursive: true });
    await expect(writeSafetensors(folder, tensors)).rejects.toThrow(`cannot write ${folder}: it is a folder, not a regular file: give the path of a file to write`);
    const fifo = path.join(dir, 'fifo.safetensors');
    expect(spawnSync('mkfifo', [fifo]).status).toBe(0);
    await expect(writeSafetensors(fifo, tensors)).rejects.toThrow(`cannot write ${fifo}: it is a FIFO, not a regular file: give the path of a file to write`);
    expect(fs.statSync(fifo).isFIFO()).toBe(true);
    expect(fs.readdirSync(dir).sort()).toEqual(['fifo.safetensors', 'taken.safetensors', 'x.safetensors']);
    fs.rmSync(folder, { recursive: true });
    fs.rmSync(fifo);
    expect(fs.readFileSync(target).equals(serializeSafetensors(tensors, { note: 'hi' }))).toBe(true); // written piece by piece
    const back = await readSafetensors(target);
    expect(back.metadata).toEqual({ note: 'hi' });
    for (const [name, t] of tensors) {
      const r = back.tensors.get(name)!;
      expect(r.dtype).toBe(t.dtype);
      expect(r.shape).toEqual(t.shape);
      expect(Array.from(r.data() as ArrayLike<unknown>)).toEqual(Array.from(t.data() as ArrayLike<unknown>));
    }
    fs.rmSync(dir, { recursive: true });
  });

  test('the data section is 8-byte aligned; bytes in native memory (a tensor\'s data()) become tensors without a copy', async () => {
    const bytes = serializeSafetensors([['w', Tensor.from(new Float64Array([1, 2]))]]);
    const dataStart = 8 + Number(bytes.readBigUInt64LE(0));
    expect(dataStart % 8).toBe(0);
    const native = Tensor.zeros([bytes.length], { dtype: 'uint8' }).data() as Uint8Array;
    native.set(bytes);
    const { tensors } = parseSafetensors(Buffer.from(native.buffer, native.byteOffset, native.byteLength));
    expect([...tensors.get('w')!.data()]).toEqual([1, 2]);
    new Float64Array(native.buffer, dataStart, 2)[1] = 7; // the tensor is a view of these bytes
    expect([...tensors.get('w')!.data()]).toEqual([1, 7]);
    // JavaScript's own bytes are copied: a later write does not reach the tensor.
    const copied = parseSafetensors(bytes).tensors.get('w')!;
    new Float64Array(bytes.buffer, bytes.byteOffset + dataStart, 2)[0] = 9;
    expect([...copied.data()]).toEqual([1, 2]);
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'pirl-st-view-'));
    try {
      fs.writeFileSync(path.join(dir, 'a.safetensors'), serializeSafetensors([['w', Tensor.from(new Float64Array([1, 2]))]]));
      expect([...(await readSafetensors(path.join(dir, 'a.safetensors'))).tensors.get('w')!.data()]).toEqual([1, 2]);
    } finally {
      fs.rmSync(dir, { recursive: true });
    }
  });

  const f32 = (n: number) => new Uint8Array(new Float32Array(n).buffer);
  test.each([
    ['shorter than 8 bytes', Buffer.from([1, 2, 3]), /shorter than the 8-byte header length/],
    ['header length beyond the file', file({}, new Uint8Array(0), 1000n), /header length 1000 is beyond/],
    ['header length of 2^64−1', file({}, new Uint8Array(0), 2n ** 64n - 1n), /header length .* is beyond/],
    ['header not JSON', file('{not json'), /header is not JSON/],
    ['header not an object', file('[1,2]'), /header is not a JSON object/],
    // Described to a depth (written whole, it overflowed the stack: a RangeError, not this error).
    ['a tensor entry nested 10^5 deep', file(`{"x": ${'['.repeat(100000)}${']'.repeat(100000)}}`), /tensor 'x' is \[\[\[\[…\]\]\]\], not an object/],
    ['a name twice', file('{"w": {"dtype":"F32","shape":[1],"data_offsets":[0,4]}, "v": {"dtype":"F32","shape":[0],"data_offsets":[4,4]}, "w" :{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}', f32(1)), /header names 'w' twice/],
    ['a name twice, once escaped', file('{"w": {"dtype":"F32","shape":[1],"data_offsets":[0,4]}, "\\u0077": {"dtype":"F32","shape":[1],"data_offsets":[0,4]}}', f32(1)), /header names 'w' twice/],
    ['metadata twice', file('{"__metadata__": {"a": "1"}, "__metadata__": {}}'), /header names '__metadata__' twice/],
    ['a header not UTF-8', (() => {
      const json = Buffer.concat([Buffer.from('{"__metadata__": {"a": "'), Buffer.from([0xc3, 0x28]), Buffer.from('"}}')]); // 0xc3 then no continuation byte
      const head = Buffer.alloc(8);
      head.writeBigUInt64LE(BigInt(json.length));
      return Buffer.concat([head, json]);
    })(), /header is not valid UTF-8/],
    ['unknown dtype', file({ w: { dtype: 'F16', shape: [2], data_offsets: [0, 4] } }, f32(1)), /unknown dtype "F16"/],
    ['offsets out of range', file({ w: { dtype: 'F32', shape: [4], data_offsets: [0, 16] } }, f32(2)), /spans bytes \[0, 16\) of a 8-byte data section: the file looks cut short \(8 byte\(s\) missing\)$/],
    ['reversed offsets', file({ w: { dtype: 'F32', shape: [0], data_offsets: [8, 4] } }, f32(2)), /spans bytes \[8, 4\)/],
    ['negative offset', file({ w: { dtype: 'F32', shape: [1], data_offsets: [-4, 0] } }, f32(2)), /data_offsets \[-4, 0\]/],
    ['shape and size disagree', file({ w: { dtype: 'F32', shape: [3], data_offsets: [0, 8] } }, f32(2)), /needs 12 bytes, its offsets give 8/],
    ['bad shape', file({ w: { dtype: 'F32', shape: [-1], data_offsets: [0, 4] } }, f32(1)), /shape \[-1\]/],
    ['overlap', file({ a: { dtype: 'F32', shape: [2], data_offsets: [0, 8] }, b: { dtype: 'F32', shape: [2], data_offsets: [4, 12] } }, f32(3)), /tensor 'b' overlaps the tensor before it/],
    ['trailing bytes', file({ w: { dtype: 'F32', shape: [1], data_offsets: [0, 4] } }, f32(2)), /4 bytes after the last tensor/],
    ['a gap between tensors', file({ a: { dtype: 'F32', shape: [1], data_offsets: [0, 4] }, b: { dtype: 'F32', shape: [1], data_offsets: [8, 12] } }, f32(3)), /bytes \[4, 8\) of the data section belong to no tensor/],
    ['metadata not strings', file({ __metadata__: { a: 1 } }), /__metadata__.a is not a string/],
  ])('rejects a file with %s', (_, bytes, message) => {
    expect(() => parseSafetensors(bytes as Uint8Array, 'bad.safetensors')).toThrow(SafetensorsError);
    expect(() => parseSafetensors(bytes as Uint8Array, 'bad.safetensors')).toThrow(message as RegExp);
  });

  test('parseSafetensors takes bytes only: a Float32Array was parsed in elements (other bytes, silently), an ArrayBuffer failed in DataView', () => {
    const bytes = serializeSafetensors(new Map([['w', Tensor.from(new Float32Array([1, 2]), [2])]]));
    const expected = 'bytes must be a Uint8Array or Buffer, got';
    expect(() => parseSafetensors(new Float32Array(Uint8Array.from(bytes).buffer, 0, Math.floor(bytes.byteLength / 4)) as never)).toThrow(`${expected} Float32Array(`);
    expect(() => parseSafetensors(bytes.buffer as never)).toThrow(`${expected} an ArrayBuffer`);
    expect(() => parseSafetensors('{}' as never)).toThrow(`${expected} "{}"`);
    expect(() => parseSafetensors(null as never)).toThrow(`${expected} null`);
    // A Uint8Array over part of a larger buffer is read from its own first byte.
    const padded = new Uint8Array(bytes.byteLength + 3);
    padded.set(bytes, 3);
    expect([...parseSafetensors(padded.subarray(3)).tensors.get('w')!.data()]).toEqual([1, 2]);
  });

  test("a file that cannot be read or written says why, and its error keeps the system's code (ENOENT, ENOSPC…) and cause", async () => {
    const missing = await readSafetensors('/nonexistent/x.safetensors').catch((e: Error) => e);
    expect([(missing as Error).message, (missing as { code?: string }).code]).toEqual(['/nonexistent/x.safetensors: no such file', 'ENOENT']);
    expect(((missing as Error).cause as { code?: string }).code).toBe('ENOENT');
    const underFile = await writeSafetensors(path.join(__filename, 'x.safetensors'), [['a', Tensor.zeros([2])]]).catch((e: Error) => e);
    expect([(underFile as Error).message, (underFile as { code?: string }).code]).toEqual([`cannot write ${path.join(__filename, 'x.safetensors')}: ${__filename} is a file, not a folder`, 'ENOTDIR']);
    // A full disk, as /dev/full is: the native writer's errno.
    const fd = fs.openSync('/dev/full', 'w');
    try {
      const full = await binding.writeTensors(fd, '/dev/full', 0, [Tensor.zeros([1000]).handle]).catch((e: Error) => e);
      expect([(full as Error).message, (full as { code?: string }).code]).toEqual(['/dev/full: cannot write at byte 0: No space left on device', 'ENOSPC']);
    } finally {
      fs.closeSync(fd);
    }
  });

  test('only regular files are read: a device or a folder is refused at once, not read forever', async () => {
    await expect(readSafetensors('/dev/zero')).rejects.toThrow(/\/dev\/zero: not a valid safetensors file: not a regular file/);
    await expect(readSafetensorsMetadata('/dev/zero')).rejects.toThrow(/not a regular file/);
    // A folder, and a run's folder given for its model (pirl embed RUN …) or checkpoint: the files in it are named.
    const run = fs.mkdtempSync(path.join(os.tmpdir(), 'pirl-st-run-'));
    try {
      await expect(readSafetensors(run)).rejects.toThrow(`${run}: not a valid safetensors file: a folder, not a file`);
      fs.writeFileSync(path.join(run, 'checkpoint.safetensors'), '');
      await expect(readSafetensors(run)).rejects.toThrow(`${run}: not a valid safetensors file: a folder, not a file: give ${path.join(run, 'checkpoint.safetensors')}`);
      fs.writeFileSync(path.join(run, 'model.safetensors'), '');
      await expect(readSafetensorsMetadata(run)).rejects.toThrow(`${run}: not a valid safetensors file: a folder, not a file: give ${path.join(run, 'model.safetensors')} (the model) or ${path.join(run, 'checkpoint.safetensors')} (the run's checkpoint)`);
      // Another file given for one (the run's metrics.csv): what it holds is said.
      fs.writeFileSync(path.join(run, 'metrics.csv'), 'epoch,step,loss,lr\n0,1,9.2,0.03\n');
      await expect(readSafetensors(path.join(run, 'metrics.csv'))).rejects.toThrow(/metrics\.csv: not a valid safetensors file: header length \d+ is beyond the file's 24 remaining bytes \(text starting "epoch,step,loss,lr\\n0,1,9.2,0.03\\n"\)$/);
      // An image, or PyTorch's torch.save archive, given for one: named.
      fs.writeFileSync(path.join(run, 'photo.jpg'), Buffer.from([0xff, 0xd8, 0xff, 0xe0, 0, 16, 0x4a, 0x46, 0x49, 0x46, 0, 1]));
      await expect(readSafetensors(path.join(run, 'photo.jpg'))).rejects.toThrow(/photo\.jpg: not a valid safetensors file: header length \d+ is beyond the file's 4 remaining bytes \(it is a JPEG image\)$/);
      fs.writeFileSync(path.join(run, 'model.pth'), Buffer.concat([Buffer.from('PK\x03\x04', 'latin1'), Buffer.alloc(60)]));
      await expect(readSafetensors(path.join(run, 'model.pth'))).rejects.toThrow(/it is a zip archive: PyTorch's torch\.save format \(\.pt, \.pth\)\? Save a state dict with safetensors\.torch\.save_file\)$/);
    } finally {
      fs.rmSync(run, { recursive: true, force: true });
    }
    // A FIFO: its open waited for a writer, forever.
    const fifo = path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'pirl-st-fifo-')), 'model.safetensors');
    try {
      spawnSync('mkfifo', [fifo]);
      await expect(readSafetensors(fifo)).rejects.toThrow(`${fifo}: not a valid safetensors file: not a regular file`);
      await expect(readSafetensorsMetadata(fifo)).rejects.toThrow(/not a regular file/);
    } finally {
      fs.rmSync(path.dirname(fifo), { recursive: true, force: true });
    }
  });

  test('files are read and written natively, at any size: a file beyond 4 GiB (one Node buffer) reads back', async () => {
    // A sparse file: 4 GiB of zeros ('big', never touched on disk) and then a tensor past 2^32 bytes.
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'pirl-st-big-'));
    try {
      const big = 2 ** 32 + 8;
      const header = { big: { dtype: 'U8', shape: [big], data_offsets: [0, big] }, w: { dtype: 'F32', shape: [2], data_offsets: [big, big + 8] } };
      const head = file(header);
      const name = path.join(dir, 'big.safetensors');
      const fd = fs.openSync(name, 'w');
      fs.writeSync(fd, head);
      fs.writeSync(fd, new Uint8Array(new Float32Array([1.5, -2]).buffer), 0, 8, head.length + big);
      fs.closeSync(fd);
      const { tensors } = await readSafetensors(name);
      expect(tensors.get('big')!.shape).toEqual([big]);
      expect([...tensors.get('w')!.data()]).toEqual([1.5, -2]);
      expect([...tensors.get('big')!.rows(big - 4, 4).data()]).toEqual([0, 0, 0, 0]);
      // Whole, it is more than one typed array holds: an error to catch (the process died of a double free).
      expect(() => tensors.get('big')!.data()).toThrow(
        new RangeError('tensor.data() of a uint8 tensor of shape [4294967304] would be 4.0 GiB: more than one typed array holds here (4.0 GiB); read it in parts with tensor.rows(start, count)'));
      // Into a buffer it cannot go: serializeSafetensors says so (writeSafetensors writes any size).
      expect(() => serializeSafetensors(tensors)).toThrow(
        new RangeError('the tensors take 4.0 GiB: more than one Node buffer holds (4 GiB); writeSafetensors writes a file of any size'));
      tensors.get('big')!.dispose();
    } finally {
      fs.rmSync(dir, { recursive: true });
    }
  });

  test('writes of one file at once each write the whole file: the last one placed wins, nothing mixed', async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'pirl-st-race-'));
    try {
      const name = path.join(dir, 'model.safetensors');
      const versions = [1, 2, 3].map((v) => new Map([['w', Tensor.from(new Float32Array(1 << 18).fill(v))], ['b', Tensor.from(new Float32Array(64).fill(-v))]]));
      for (let round = 0; round < 5; round++) {
        await Promise.all(versions.map((v, i) => writeSafetensors(name, v, { version: String(i + 1) })));
        const { tensors, metadata } = await readSafetensors(name);
        const v = Number(metadata.version);
        expect([...new Set(tensors.get('w')!.data() as Float32Array)]).toEqual([v]);
        expect([...new Set(tensors.get('b')!.data() as Float32Array)]).toEqual([-v]);
      }
      expect(fs.readdirSync(dir)).toEqual(['model.safetensors']); // no temporary left
    } finally {
      fs.rmSync(dir, { recursive: true });
    }
  });

  test('a tensor disposed before it is written is an error naming it, and leaves no file', async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'pirl-st-short-'));
    try {
      const gone = Tensor.from(new Float32Array([1]));
      gone.dispose();
      await expect(writeSafetensors(path.join(dir, 'x.safetensors'), [['a', Tensor.from(new Float32Array([1]))], ['gone', gone]])).rejects.toThrow(/tensor 'gone' was disposed/);
      expect(fs.readdirSync(dir)).toEqual([]); // nothing left behind
    } finally {
      fs.rmSync(dir, { recursive: true });
    }
  });

  test('what no reader would take is refused before a byte is written: metadata not strings, a name twice, the name __metadata__', async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'pirl-st-refused-'));
    try {
      const a = Tensor.from(new Float32Array([1, 2]));
      const out = path.join(dir, 'x.safetensors');
      const refusals: Array<[Parameters<typeof writeSafetensors>[1], unknown, RegExp]> = [
        [[['a', a]], { n: 5 }, /^metadata\.n must be a string \(safetensors metadata holds strings only\), got 5$/],
        [[['a', a]], null, /^metadata must be an object, got null$/],
        [[['a', a], ['a', a]], {}, /^tensors\[1\]'s name must be a name no other tensor has, got "a"$/],
        [[['__metadata__', a]], {}, /^tensors\[0\]'s name must be a name other than __metadata__/],
        [{ a } as never, {}, /^tensors must be named tensors: a Map or an array of \[name, Tensor\] pairs, got an object$/],
        [[[1, a]] as never, {}, /^tensors\[0\] must be a \[name, Tensor\] pair, got \[1, /],
      ];
      for (const [tensors, metadata, message] of refusals) {
        await expect(writeSafetensors(out, tensors, metadata as Record<string, string>)).rejects.toThrow(message);
        expect(() => serializeSafetensors(tensors, metadata as Record<string, string>)).toThrow(message);
      }
      expect(fs.readdirSync(dir)).toEqual([]);
      // What is taken reads back.
      await writeSafetensors(out, new Map([['a', a]]), { n: '5' });
      expect((await readSafetensors(out)).metadata).toEqual({ n: '5' });
    } finally {
      fs.rmSync(dir, { recursive: true });
    }
  });

  test('an empty tensor takes no bytes, wherever its offsets point', () => {
    const bytes = file({ e: { dtype: 'F32', shape: [0], data_offsets: [0, 0] }, w: { dtype: 'F32', shape: [2], data_offsets: [0, 8] } }, f32(2));
    const { tensors } = parseSafetensors(bytes);
    expect(tensors.get('e')!.shape).toEqual([0]);
    expect(tensors.get('w')!.shape).toEqual([2]);
  });

  test('unaligned data is copied, not misread', () => {
    // A header of odd length puts the data at an odd offset.
    const bytes = file({ w: { dtype: 'F32', shape: [2], data_offsets: [0, 8] } }, new Uint8Array(new Float32Array([1.25, -3]).buffer));
    expect([...parseSafetensors(bytes).tensors.get('w')!.data()]).toEqual([1.25, -3]);
  });
});
