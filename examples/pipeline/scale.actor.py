from reflow import actor


@actor(name="Scale", inports=["input"], outports=["output", "count"], tags=["example"])
async def scale(context):
    """Multiplies each number by the node's `factor` and counts the numbers
    it has seen (in the actor's state, which outlives its VM)."""
    x = context.get_input("input")
    factor = context.config.get("factor", 2)
    seen = await context.state.increment("seen")
    await context.send_output("output", x * factor)
    return {"count": seen}
