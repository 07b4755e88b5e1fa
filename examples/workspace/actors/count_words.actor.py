from reflow import actor


@actor(
    {
        "component": "CountWords",
        "inports": ["word"],
        "outports": ["count"],
        "description": "Counts each word it has seen, in the actor's state.",
    }
)
async def count_words(context):
    word = context.get_input("word")
    n = await context.state.increment(f"word:{word}")
    if n > 1:
        await context.send_output("count", f"{word} x{n}")
