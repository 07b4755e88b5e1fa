"""Unit tests of the Python SDK, run on the host (`./dev.sh test`)."""

import unittest

from reflow import ActorError, actor
from reflow.invoke import ActorFailure, invoke, load_script


class FakeTransport:
    def __init__(self):
        self.outputs, self.calls, self.store = [], [], {}

    def send_output(self, port, value):
        self.outputs.append((port, value))

    def state_call(self, op, key, args):
        self.calls.append((op, key, args))
        if op == "increment":
            self.store[key] = self.store.get(key, 0) + args[0]
            return self.store[key]
        if op == "set":
            self.store[key] = args[0]
            return None
        if op == "get":
            return self.store.get(key)
        return None


MULTIPLIER = '''
@actor(name="Multiplier", inports=["input"], outports=["output"], tags=["math"])
async def process(context):
    """Multiplies its input by the configured factor."""
    x = context.get_input("input", 0)
    factor = context.config.get("factor", 2)
    n = await context.state.increment("calls")
    await context.send_output("output", x * factor)
    return {"calls": n}
'''


class DecoratorTest(unittest.TestCase):
    def test_keyword_form_and_docstring(self):
        fn = load_script(MULTIPLIER)
        meta = fn.__actor_metadata__.to_dict()
        self.assertEqual(meta["component"], "Multiplier")
        self.assertEqual(meta["description"], "Multiplies its input by the configured factor.")
        self.assertEqual(meta["inports"], [{"name": "input", "type": "any", "required": True}])
        self.assertEqual(meta["outports"], [{"name": "output", "type": "any"}])
        self.assertEqual(meta["tags"], ["math"])

    def test_dict_form(self):
        @actor({"component": "Greeter", "description": "Greets", "inports": ["name"],
                "outports": [{"name": "greeting", "type": "string"}]})
        def process(context):
            return None

        meta = process.__actor_metadata__.to_dict()
        self.assertEqual((meta["component"], meta["description"]), ("Greeter", "Greets"))
        self.assertEqual(meta["outports"], [{"name": "greeting", "type": "string"}])

    def test_mistakes_are_named(self):
        cases = [
            (lambda: actor(name="X", inports=["a", "a"]), 'inport "a" listed twice'),
            (lambda: actor(nmae="X"), "unknown keys ['nmae']"),
            (lambda: actor({"component": "X"}, tags=[]), "not both"),
            (lambda: actor(name="X", inports="a"), '"inports" must be a list'),
            (lambda: actor(name="X", tags=[1]), '"tags" must be a list of strings'),
        ]
        for make, message in cases:
            with self.assertRaises(ActorError) as e:
                make()(lambda context: None)
            self.assertIn(message, str(e.exception))
        with self.assertRaises(ActorError):
            actor(name="X")(lambda a, b: None)


class InvokeTest(unittest.TestCase):
    def test_multiplier_streams_counts_and_returns(self):
        fn = load_script(MULTIPLIER)
        t = FakeTransport()
        out = invoke(fn, {"input": 21}, {"factor": 3}, "node-1", t)
        self.assertEqual(t.outputs, [("output", 63)])
        self.assertEqual(out, {"calls": 1})
        out = invoke(fn, {"input": 1}, {}, "node-1", t)
        self.assertEqual((t.outputs[-1], out), (("output", 2), {"calls": 2}))

    def test_sync_actor_several_outputs_and_bad_port(self):
        fn = load_script('''
@actor(name="Split", inports=["in"], outports=["a", "b"])
def split(context):
    for x in context.get_input("in"):
        context.send_output_sync("a" if x % 2 else "b", x)
''')
        t = FakeTransport()
        self.assertEqual(invoke(fn, {"in": [1, 2, 3]}, {}, "n", t), {})
        self.assertEqual(t.outputs, [("a", 1), ("b", 2), ("a", 3)])
        bad = load_script('''
@actor(name="Bad", outports=["a"])
def bad(context):
    context.send_output_sync("nope", 1)
''')
        with self.assertRaises(ActorFailure) as e:
            invoke(bad, {}, {}, "n", FakeTransport())
        self.assertIn('unknown outport "nope"', e.exception.message)

    def test_failures_are_reported_not_raised_through(self):
        with self.assertRaises(ActorFailure) as e:
            load_script("def broken(:\n    pass")
        self.assertEqual(e.exception.kind, "load")
        self.assertIn("SyntaxError", e.exception.message)
        with self.assertRaises(ActorFailure) as e:
            load_script("x = 1")
        self.assertIn("no function decorated with @actor", e.exception.message)
        with self.assertRaises(ActorFailure) as e:
            load_script("import sys\nsys.exit(3)")
        self.assertIn("SystemExit", e.exception.message)
        boom = load_script('''
@actor(name="Boom")
async def boom(context):
    raise RuntimeError("kaput")
''')
        with self.assertRaises(ActorFailure) as e:
            invoke(boom, {}, {}, "n", FakeTransport())
        self.assertEqual(e.exception.kind, "run")
        self.assertIn("RuntimeError: kaput", e.exception.message)
        self.assertIn("Traceback", e.exception.trace)
        odd = load_script('@actor(name="Odd")\ndef odd(context):\n    return 5\n')
        with self.assertRaises(ActorFailure) as e:
            invoke(odd, {}, {}, "n", FakeTransport())
        self.assertIn("return a dict of outputs or None", e.exception.message)

    def test_state_values_must_be_json(self):
        fn = load_script('''
@actor(name="S")
async def s(context):
    await context.state.set("k", {1, 2})
''')
        with self.assertRaises(ActorFailure) as e:
            invoke(fn, {}, {}, "n", FakeTransport())
        self.assertIn("JSON-serializable", e.exception.message)


if __name__ == "__main__":
    unittest.main()
