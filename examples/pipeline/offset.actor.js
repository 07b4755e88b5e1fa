// Adds the node's `amount` to each number: a JavaScript actor in its own
// microVM, between the Python actor and the native formatter.
const metadata = {
  component: "Offset",
  description: "Adds the configured amount to each number",
  inports: ["in"],
  outports: ["out"],
  tags: ["example"],
  config: { amount: 0 },
};

async function process(context) {
  const x = context.getInput("in");
  await context.sendOutput("out", x + context.getConfig().amount);
}

module.exports = { metadata, process };
