from reflow import actor


@actor(name="Tokenize", inports=["text"], outports=["word"], tags=["text"])
def tokenize(context):
    """Splits text into lower-case words, one packet each."""
    for word in context.get_input("text", "").lower().split():
        context.send_output_sync("word", word.strip(".,;:!?"))
