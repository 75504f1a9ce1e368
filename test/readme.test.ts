// The README's TypeScript examples type-check against the package as users get it (dist/index.d.ts, whose @internal
// parts are stripped): an example that calls a renamed method, passes an option that is gone or uses an internal one
// fails here, not in a user's editor.
import * as fs from 'fs';
import * as path from 'path';
import ts from 'typescript';
import { fencedBlocks } from './helpers';

const root = path.join(__dirname, '..');

// What the examples take as given (a request's body, a batch's tensors), typed as the API hands them out.
const GIVEN = `import type { Tensor as GivenTensor, TrainConfig as GivenConfig, Dataset as GivenDataset } from 'pirl';
declare const requestBody: Buffer;
declare const images: GivenTensor;
declare const patches: GivenTensor;
declare const f: GivenTensor;
declare const g: GivenTensor;
declare const indices: Int32Array;
declare const data: GivenDataset;
declare const config: GivenConfig;
`;

interface Example {
  line: number;
  text: string;
}

function examples(): Example[] {
  return fencedBlocks(fs.readFileSync(path.join(root, 'README.md'), 'utf8'))
    .filter((b) => b.lang === 'ts')
    .map((b) => ({ line: b.open + 2, text: b.lines.join('\n') }));
}

// The example as a module: its imports on top, the rest in an async function (the README's top-level awaits).
function moduleOf(example: Example): { source: string; firstLine: number } {
  const lines = example.text.split('\n');
  const imports = lines.filter((l) => l.startsWith('import '));
  const body = lines.filter((l) => !l.startsWith('import '));
  const head = `${imports.join('\n')}\n${GIVEN}export async function example(): Promise<void> {\n`;
  return { source: `${head}${body.join('\n')}\n}\n`, firstLine: head.split('\n').length - 1 };
}

// Each example's type errors, as "README.md:LINE: message"; a line whose comment says the call throws a TypeError
// (an unknown option, shown on purpose) must have one.
function typeErrors(all: Example[]): string[] {
  const dir = fs.mkdtempSync(path.join(root, 'build', 'readme-'));
  try {
    const files = all.map((example, i) => {
      const file = path.join(dir, `example${i}.ts`);
      const { source, firstLine } = moduleOf(example);
      fs.writeFileSync(file, source);
      return { file, example, source, firstLine };
    });
    const program = ts.createProgram(files.map((f) => f.file), {
      target: ts.ScriptTarget.ES2022, module: ts.ModuleKind.CommonJS, moduleResolution: ts.ModuleResolutionKind.Node10, strict: true,
      noEmit: true, types: ['node'], typeRoots: [path.join(root, 'node_modules/@types')], esModuleInterop: true,
      baseUrl: root, paths: { pirl: ['dist/index.d.ts'] },
    });
    const out: string[] = [];
    for (const { file, example, source, firstLine } of files) {
      const sourceFile = program.getSourceFile(file)!;
      const bodyLines = source.split('\n');
      // Body line k of the module is README line example.line + (its index among the example's non-import lines).
      const exampleLines = example.text.split('\n');
      const bodyToReadme = exampleLines.map((l, k) => ({ l, k })).filter(({ l }) => !l.startsWith('import ')).map(({ k }) => example.line + k);
      const importToReadme = exampleLines.map((l, k) => ({ l, k })).filter(({ l }) => l.startsWith('import ')).map(({ k }) => example.line + k);
      const readmeLine = (moduleLine: number) => (moduleLine < importToReadme.length ? importToReadme[moduleLine] : moduleLine >= firstLine ? bodyToReadme[moduleLine - firstLine] : -1);
      const flagged = new Set<number>();
      for (const d of [...program.getSyntacticDiagnostics(sourceFile), ...program.getSemanticDiagnostics(sourceFile)]) {
        const moduleLine = d.start === undefined ? -1 : sourceFile.getLineAndCharacterOfPosition(d.start).line;
        if (moduleLine >= firstLine && /\/\/ TypeError/.test(bodyLines[moduleLine])) {
          flagged.add(moduleLine);
          continue;
        }
        out.push(`README.md:${readmeLine(moduleLine)}: ${ts.flattenDiagnosticMessageText(d.messageText, '\n')}`);
      }
      bodyLines.forEach((text, k) => {
        if (k >= firstLine && /\/\/ TypeError/.test(text) && !flagged.has(k)) out.push(`README.md:${readmeLine(k)}: said to be a TypeError, but it type-checks`);
      });
    }
    return out;
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

// The published types are dist's (npm test compiles lib/ first): older than a source, they would judge another API.
function checkDistCurrent(): void {
  const built = fs.statSync(path.join(root, 'dist', 'index.d.ts')).mtimeMs;
  const sources = fs.readdirSync(path.join(root, 'lib'), { recursive: true }).map(String).filter((f) => f.endsWith('.ts'));
  const newer = sources.filter((f) => fs.statSync(path.join(root, 'lib', f)).mtimeMs > built);
  if (newer.length > 0) throw new Error(`dist/ is older than lib/${newer[0]}: run npx tsc -p tsconfig.json first`);
}

test("the README's TypeScript examples type-check against the published types", () => {
  checkDistCurrent();
  const all = examples();
  expect(all.length).toBeGreaterThanOrEqual(8);
  expect(typeErrors(all)).toEqual([]);
});

test('a wrong example is caught, at its README line', () => {
  const wrong = [{ line: 100, text: "import { PirlModel } from 'pirl';\n\nconst model = await PirlModel.create({ arch: 'resnet18' });\nawait model.trainStep(images);\nconst x = await model.embed(images, { layer: 'res5' }); // TypeError: none" }];
  const errors = typeErrors(wrong);
  expect(errors).toEqual([
    "README.md:103: Property 'trainStep' does not exist on type 'PirlModel'.",
    'README.md:104: said to be a TypeError, but it type-checks',
  ]);
});
