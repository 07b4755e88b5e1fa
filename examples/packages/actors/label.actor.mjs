// An ES module actor using camelcase (an ES-module-only npm package this
// workspace's package.json asks for; the base image does not have it).
import camelCase from 'camelcase';

export const metadata = {
  component: 'Label',
  description: 'Names each figure of a summary in camelCase',
  inports: ['summary'],
  outports: ['line'],
  tags: ['example'],
};

export default async function process(context) {
  const summary = context.getInput('summary');
  const parts = Object.entries(summary).map(
    ([name, value]) => `${camelCase(`summary ${name}`)}=${value}`,
  );
  return { line: parts.join(' ') };
}
