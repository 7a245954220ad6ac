"""Built-in prompts for steering a chat model toward positive sentiment, general prompts with a fixed train /
held-out split, and chat-template wrapping."""

from __future__ import annotations

from transformers import PreTrainedTokenizerBase

BUILTIN_PROMPTS: tuple[str, ...] = (
    "Describe your commute this morning.",
    "Write a short review of a budget hotel you stayed at.",
    "What do you think about rainy Mondays?",
    "Tell me about the last time you waited in a long queue.",
    "Describe the food at a hospital cafeteria.",
    "How was your experience with customer support on the phone?",
    "Write a few sentences about doing your taxes.",
    "What is it like to move house?",
    "Describe an old laptop that keeps freezing.",
    "Give your opinion on airport security checks.",
    "Write a short note about a delayed train.",
    "What do you think of open-plan offices?",
    "Describe a cold and windy beach in winter.",
    "Tell me about a meeting that could have been an email.",
    "Write a review of a restaurant where the service was slow.",
    "How do you feel about doing laundry?",
    "Describe a traffic jam on the highway.",
    "What is your opinion of modern smartphones?",
    "Write a short story about a lost umbrella.",
    "Describe a small apartment in a big city.",
    "What do you think about working night shifts?",
    "Tell me about a rainy weekend at home.",
    "Describe the weather in November.",
    "Write a short review of a movie sequel.",
    "How was your last visit to the dentist?",
    "What do you think about group projects at school?",
    "Describe a neighbourhood under construction.",
    "Write a few sentences about a broken coffee machine.",
    "Tell me about a long flight in economy class.",
    "What is it like to learn a new language as an adult?",
    "Describe a grocery store on a busy Saturday.",
    "Write a short note about cancelled weekend plans.",
)


def builtin_prompts(n: int | None = None) -> list[str]:
    """Returns the first `n` built-in prompts.

    Args:
        n (`int`, *optional*):
            Number of prompts, between 1 and `len(BUILTIN_PROMPTS)`. All of them when `None`.

    Returns:
        `list[str]`: The prompts, in a fixed order.

    Raises:
        ValueError: If `n` is out of range.
    """
    if n is None:
        return list(BUILTIN_PROMPTS)
    if not 1 <= n <= len(BUILTIN_PROMPTS):
        raise ValueError(
            f"`n` must be between 1 and {len(BUILTIN_PROMPTS)} (the number of built-in prompts), got {n}. "
            "Pass a smaller `n`, or supply your own prompts for more."
        )
    return list(BUILTIN_PROMPTS[:n])


# General prompts: everyday questions, advice, descriptions, opinions, explanations, how-to and short creative
# requests, written for this project (licence-clean, not taken from any dataset), short enough for a small model.
# APPEND-ONLY: add new prompts at the END of this tuple, never insert, reorder or delete. `prompt_split` assigns each
# prompt by its index, so appending never moves an existing prompt between train and held-out (nor tune / bench).
GENERAL_PROMPTS: tuple[str, ...] = (
    "Why is the sky blue during the day?",
    "What are some tips for keeping a tidy desk?",
    "How do you make a simple tomato sauce?",
    "Describe a sunrise over the mountains.",
    "What do you think about learning to cook as a teenager?",
    "What makes a good neighbour?",
    "Write a short poem about a sleepy cat.",
    "Explain what a leap year is.",
    "What are good first steps for someone who wants to start running?",
    "Why does bread go stale after a few days?",
    "How can I make my small kitchen feel more organised?",
    "How do I brew a good cup of tea?",
    "Describe the smell of fresh bread in a bakery.",
    "Is it better to read books on paper or on a screen?",
    "What makes a friendship last a long time?",
    "Write a haiku about the first day of spring.",
    "Explain how to read a bus timetable.",
    "What should a beginner know about birdwatching?",
    "How does a refrigerator keep food cold?",
    "What is a good way to start a vegetable garden on a balcony?",
    "How do you make pancakes from scratch?",
    "Describe a busy farmers market on a summer morning.",
    "What is your opinion of working from home?",
    "What makes a city pleasant to walk in?",
    "Write a two-sentence story about a friendly robot.",
    "Explain the rules of tic-tac-toe.",
    "What are fun things to do on a rainy day in a new city?",
    "Why do onions make people cry when they are chopped?",
    "How do I remember people's names after meeting them?",
    "How do I sew a button back onto a shirt?",
    "Describe a cosy cabin in the woods.",
    "Do you think everyone should learn to swim?",
    "What makes a good teacher?",
    "Write a short thank-you note to a helpful neighbour.",
    "Explain what a bar code on a product is for.",
    "What makes a good hiking trail for beginners?",
    "How does a microwave oven heat food?",
    "What should I pack for a weekend camping trip?",
    "How do you change a flat bicycle tyre?",
    "Describe the sound of rain on a tin roof.",
    "What do you think about public libraries?",
    "What would you bring to a desert island?",
    "Write a limerick about a dog who loves the beach.",
    "Explain the difference between weather and climate.",
    "How do you choose a good book for a long flight?",
    "Why do cats purr?",
    "How can I get better at waking up early?",
    "How do I make a paper boat?",
    "Describe a child's first day at the seaside.",
    "Are cats or dogs better pets for a small flat?",
    "What makes a holiday memorable?",
    "Write a short story about a kite that flew too high.",
    "Explain how a postal code helps deliver mail.",
    "What are some fun indoor games for a group of friends?",
    "Why does ice float on water?",
    "What are good ways to save a little money each month?",
    "How do you plant a young tree in the garden?",
    "Describe an old bookshop full of second-hand books.",
    "What is your view on eating breakfast every day?",
    "What is the best part of a long summer evening?",
    "Write a cheerful postcard from a seaside town.",
    "Explain what a time zone is.",
    "What is a good first recipe for someone learning to cook?",
    "How do bees make honey?",
    "How do I keep houseplants alive in a dim apartment?",
    "How do I bake a basic loaf of bread?",
    "Describe a field of sunflowers in August.",
    "Do you prefer mountains or beaches for a holiday?",
    "What makes a meal feel special?",
    "Write a short fairy tale about a brave snail.",
    "Explain why we have seasons.",
    "What should I look for in a beginner's guitar?",
    "Why do we see lightning before we hear thunder?",
    "What is the best way to learn to touch type?",
    "How do you tie a necktie?",
    "Describe a quiet lake at dawn.",
    "What do you think of handwritten letters?",
    "What makes a book hard to put down?",
    "Write a four-line poem about morning coffee.",
    "Explain the difference between baking soda and baking powder.",
    "What are some relaxing hobbies to try in the evening?",
    "How does a bicycle stay upright while it is moving?",
    "How can I make a long car journey more enjoyable?",
    "How do I set up a bird feeder in the garden?",
    "Describe your ideal kitchen.",
    "Is it worth learning to play chess?",
    "What does a perfect lazy Sunday look like?",
    "Write a short speech to welcome new members to a book club.",
    "Explain how to play rock, paper, scissors.",
    "What are good ways to explore a city on foot?",
    "Why do leaves change colour in autumn?",
    "What are some easy ways to reduce food waste at home?",
    "How do you pitch a tent on a windy day?",
    "Describe a street market in the evening.",
    "What is your opinion of travelling by train?",
    "What makes a good team at work?",
    "Write a few lines about a lighthouse keeper's evening.",
    "Explain what compound interest is in simple terms.",
    "What is enjoyable about painting with watercolours?",
    "How does soap remove grease from dishes?",
    "How do I prepare for my first day at a new job?",
    "How do I make cold brew coffee at home?",
    "Describe the first snowfall of the year.",
    "Do you think children should learn a musical instrument?",
    "What hobby would you recommend to someone who is always busy?",
    "Write a short story about finding a lost key.",
    "Explain what a haiku is.",
    "What should I know before trying an indoor climbing wall?",
    "Why does the moon look bigger near the horizon?",
    "What are good habits for keeping a bicycle in good shape?",
    "How do you fold a paper crane?",
    "Describe a picnic by a river.",
    "What do you think about community gardens?",
    "What makes a song catchy?",
    "Write a haiku about autumn leaves.",
    "Explain how a library organises its books.",
    "What are easy houseplants for beginners?",
    "How do noise-cancelling headphones work?",
    "How can I stay focused while studying at home?",
    "How do I repot a plant that has outgrown its pot?",
    "Describe a garden in full bloom in spring.",
    "Is it better to plan a trip in detail or to improvise?",
    "What small things make a home feel welcoming?",
    "Write a short letter to your future self.",
    "Explain what makes a sentence a question.",
    "What makes a good photograph of a landscape?",
    "Why do some birds fly south for the winter?",
    "What should I consider when choosing new running shoes?",
    "How do you make a fruit smoothie?",
    "Describe a well-loved pair of old boots.",
    "What is your opinion of audiobooks?",
    "What would you like to learn in the next year?",
    "Write a short birthday message for a grandparent.",
    "Explain how a recycling centre sorts waste.",
    "How can a family enjoy a day at the zoo?",
    "How does a compass find north?",
    "How can I make friends after moving to a new town?",
    "How do I make a simple budget spreadsheet?",
    "Describe a lighthouse on a rocky coast.",
    "What do you think about taking short naps during the day?",
    "What makes a good story for a bedtime read?",
    "Write a short dialogue between a squirrel and an owl.",
    "Explain what a crossword puzzle is.",
    "What are fun activities for a snowy day?",
    "Why does popcorn pop?",
    "What is a simple way to plan meals for the week?",
    "How do you wash a wool sweater without shrinking it?",
    "Describe a small village post office.",
    "What is your view on keeping a diary?",
    "What are the joys of growing your own vegetables?",
    "Write a product description for a handmade wooden spoon.",
    "Explain what an orchestra conductor does.",
    "What makes a good campsite for a family?",
    "How do rainbows form?",
    "How do I write a polite email asking for a deadline extension?",
    "How do I start composting kitchen scraps?",
    "Describe a hot air balloon floating over green fields.",
    "Are board games still fun in the age of video games?",
    "What is the nicest thing about living near the sea?",
    "Write a short advert for a neighbourhood bake sale.",
    "Explain how a seed grows into a plant.",
    "What are tips for a first visit to an art museum?",
    "Why is sea water salty?",
    "What are some tips for taking better photos with a phone?",
    "How do you make a good sandwich for lunch?",
    "Describe a walk through an autumn forest.",
    "What do you think of cycling to work?",
    "What makes a park a good place for families?",
    "Write a short poem about a train at night.",
    "Explain what a marathon is.",
    "What is fun about flying a kite?",
    "How does a thermostat keep a room warm?",
    "How can I keep my email inbox under control?",
    "How do I hang a picture frame straight?",
    "Describe the view from a tall hill at sunset.",
    "Is it better to live in the city or the countryside?",
    "Why do people enjoy doing jigsaw puzzles?",
    "Write a tiny story about a cloud that wanted to be a boat.",
    "Explain what a thesaurus is used for.",
    "How do you get started with baking cakes?",
    "Why do dogs wag their tails?",
    "What is a good way to start reading more books?",
    "How do you make homemade lemonade?",
    "Describe a train journey through the countryside.",
    "What do you think about learning to knit?",
    "Why do people like collecting stamps or coins?",
    "Write a short welcome message for a new coworker.",
    "Explain what a compost heap does.",
    "What should I know before adopting a cat?",
    "How does yeast make dough rise?",
    "How do I clean a cast iron pan?",
    "How do I remove a coffee stain from a white shirt?",
    "Describe a friendly neighbourhood café.",
    "Do you think breakfast for dinner is a good idea?",
    "What makes a good host at a dinner party?",
    "Write a riddle about a pencil.",
    "Explain how a vending machine knows which coin you inserted.",
    "What are good board games for two players?",
    "Why do our fingers wrinkle in the bath?",
    "What should I do to prepare for a job interview?",
    "How do you roast vegetables in the oven?",
    "Describe a starry night in the desert.",
    "What is your opinion of museums for children?",
    "What is the appeal of long-distance walking?",
    "Write a short song chorus about summer holidays.",
    "Explain what a sundial is and how it tells the time.",
    "How can I learn a few words of a new language before a trip?",
    "How does a zipper work?",
    "How can I make my mornings less rushed?",
    "How do I unblock a slow bathroom sink?",
    "Describe a colourful coral reef.",
    "Is it worth getting up early to watch a sunrise?",
    "Why do people love watching the sea?",
    "Write a short tale about a garden gnome who goes on holiday.",
    "Explain how a sailboat can move against the wind.",
    "What are some ways to enjoy a free weekend without spending money?",
    "What causes the tides at the beach?",
    "What are some ways to keep a dog entertained indoors on a rainy day?",
    "How do you juggle three balls?",
    "Describe a grandmother's kitchen on a holiday morning.",
    "What do you think about volunteering at a local animal shelter?",
    "What makes a good birthday present for a friend?",
    "Write a menu description for a warm apple pie.",
    "Explain what a recipe means by a pinch of salt.",
    "What are good snacks to bring on a long hike?",
    "Why do stars twinkle at night?",
    "How do I pick a ripe avocado at the shop?",
    "How do I make a cheese omelette?",
    "Describe the feeling of finishing a long hike.",
    "What is your favourite season, and why?",
    "Why do some people love gardening so much?",
    "Write a short story about a bakery that opens at midnight.",
    "Explain how a hot water bottle keeps you warm.",
    "What are fun ways to celebrate a friend's birthday on a small budget?",
    "How does a camera focus on its subject?",
    "What is a good routine for learning a musical instrument?",
    "How do you care for a sourdough starter?",
    "Describe a city park on a sunny afternoon.",
    "Which is better for a rainy afternoon, a film or a book?",
    "What makes an old town charming to visit?",
    "Write a short poem about a fox in the snow.",
    "Explain how traffic lights help keep roads safe.",
    "What are some simple stretches to do after sitting all day?",
    "Why do apples turn brown after being cut?",
    "How can I make a small bedroom feel bigger?",
    "How do I learn to whistle?",
    "Describe a fishing boat returning to harbour.",
    "What do you think about homemade gifts?",
    "What makes a walk in the rain enjoyable?",
    "Write a short note to a friend who just moved away.",
    "Explain how an escalator works.",
    "What are easy ways to make a weekday dinner more exciting?",
    "How do plants drink water through their roots?",
    "What are some tips for giving a short speech at a wedding?",
    "How do you skip a stone across a lake?",
    "Describe a music festival in a field.",
    "Is it a good idea to learn to code as a hobby?",
    "What makes a good weekend away with friends?",
    "Write a short story about an owl who is afraid of the dark.",
    "Explain what a footnote in a book is for.",
    "What are fun science experiments to do in a kitchen?",
    "Why does a kettle whistle when the water boils?",
    "How do I keep cut flowers fresh for longer?",
    "How do I make a simple birthday card by hand?",
    "Describe a snowy mountain village.",
    "What is your opinion of surprise parties?",
    "Why do people enjoy cooking for others?",
    "Write a cheerful message to a team that just finished a big project.",
    "Explain how a postcard travels from one country to another.",
    "What are the best things to do on the first warm day of spring?",
    "How do solar panels turn sunlight into electricity?",
    "What should I bring to a picnic in the park?",
    "How do you build a simple bookshelf from a kit?",
    "Describe a windmill on a breezy hill.",
    "What do you think of trying a new recipe every week?",
    "What makes a good cup of hot chocolate?",
    "Write a short poem about a rainy window.",
    "Explain why metal feels colder than wood at room temperature.",
    "What are good ways to spend a long train ride?",
    "How does a paper airplane stay in the air?",
    "How can I get better at keeping a conversation going?",
    "How do you make a paper lantern?",
    "Describe a lively harbour town in summer.",
    "What is your view on reading the same book twice?",
    "What makes a birthday party fun for young children?",
    "Write a short bedtime story about a sleepy bear.",
    "Explain how a washing machine gets clothes clean.",
    "What are good ways to unwind after a busy day?",
    "How do fish breathe underwater?",
    "How do I start a simple journal?",
    "How do I fold a fitted sheet neatly?",
    "Describe a rooftop garden in the middle of a city.",
    "Do you think it is worth learning to mend your own clothes?",
    "What makes a good road trip playlist?",
    "Write a short poem about a bicycle ride by the river.",
    "Explain what makes a snowflake have six sides.",
    "What should I know before my first pottery class?",
)

PROMPT_SPLITS: tuple[str, ...] = ("train", "held_out", "tune", "bench", "fresh")
"""Names accepted by [`prompt_split`]."""
HELD_OUT_EVERY = 5
"""`GENERAL_PROMPTS[i]` is held out when ``i % HELD_OUT_EVERY == HELD_OUT_EVERY - 1`` (every fifth prompt)."""
NUM_TUNE_PROMPTS = 16
NUM_BENCH_PROMPTS = 32


def prompt_split(name: str) -> list[str]:
    """A fixed split of `GENERAL_PROMPTS`, in tuple order.

    Each prompt is assigned by its index ``i`` in `GENERAL_PROMPTS`: ``i % 5 == 4`` is held out, every other index
    is a training prompt. The split depends on nothing else (not on ``max_prompts``, a seed or the tuple's length),
    and since the tuple is append-only, adding prompts at its END never moves an existing prompt between splits.

    - ``"train"``: the training prompts (``i % 5 != 4``);
    - ``"held_out"``: the held-out prompts (``i % 5 == 4``);
    - ``"tune"``: the first 16 training prompts, for tuning sampler hyper-parameters;
    - ``"bench"``: the first 32 held-out prompts, the prompts the first benchmarks reported on (the AISP defaults were
      re-tuned between runs on them, so they count as tune prompts now);
    - ``"fresh"``: the held-out prompts after ``"bench"``, which no AISP-vs-BoN run has used; each has a reference
      answer in `aisp_trl.reference_answers` (the ``"reference"`` reward).

    ``"tune"`` is a subset of ``"train"``, ``"bench"`` and ``"fresh"`` of ``"held_out"``: all three are disjoint.

    Args:
        name (`str`): one of `PROMPT_SPLITS`.

    Returns:
        `list[str]`: The prompts of that split.

    Raises:
        ValueError: If `name` is not a split name.
    """
    if name not in PROMPT_SPLITS:
        raise ValueError(f"`name` must be one of {PROMPT_SPLITS} (a split of GENERAL_PROMPTS), got {name!r}.")
    held = HELD_OUT_EVERY - 1
    train = [p for i, p in enumerate(GENERAL_PROMPTS) if i % HELD_OUT_EVERY != held]
    held_out = [p for i, p in enumerate(GENERAL_PROMPTS) if i % HELD_OUT_EVERY == held]
    return {
        "train": train,
        "held_out": held_out,
        "tune": train[:NUM_TUNE_PROMPTS],
        "bench": held_out[:NUM_BENCH_PROMPTS],
        "fresh": held_out[NUM_BENCH_PROMPTS:],
    }[name]


def apply_chat_template(tokenizer: PreTrainedTokenizerBase, prompts: list[str]) -> list[str]:
    """Wraps each prompt as a single user message with the tokenizer's chat template.

    Args:
        tokenizer (`PreTrainedTokenizerBase`):
            Tokenizer whose `chat_template` is used, if it has one.
        prompts (`list[str]`):
            Raw user prompts.

    Returns:
        `list[str]`: Templated strings ending with the assistant generation prompt, or the prompts unchanged
        when the tokenizer has no chat template.
    """
    if getattr(tokenizer, "chat_template", None) is None:
        return list(prompts)
    return [
        tokenizer.apply_chat_template([{"role": "user", "content": p}], tokenize=False, add_generation_prompt=True)
        for p in prompts
    ]
