"""Reference answers to the ``"fresh"`` prompts (`aisp_trl.prompts.prompt_split`), written for this project (same
licence as the package): what `aisp_trl.rewards.ReferenceReward` compares an answer with.

Each is a short, helpful, on-topic answer of the kind a strong assistant gives in a few sentences. A reward that
measures closeness to them is not raised by repeating praise words; echoing the prompt keeps an answer on topic and
still scores fairly high (see `aisp_trl.rewards.ReferenceReward`).
"""

from __future__ import annotations

__all__ = ["REFERENCE_ANSWERS"]

REFERENCE_ANSWERS: dict[str, str] = {
    "How do you make a good sandwich for lunch?": (
        "Start with fresh bread and spread butter, mayonnaise or mustard to the edges so it does not go soggy. Add a "
        "protein such as ham, chicken, cheese, egg or hummus, then crisp vegetables like lettuce, tomato and "
        "cucumber, season with salt and pepper, and wrap it tightly to keep it fresh until lunch."
    ),
    "Explain what a marathon is.": (
        "A marathon is a long-distance running race of 42.195 kilometres, or 26.2 miles, usually run on roads. It is "
        "named after the legend of a Greek messenger who ran from Marathon to Athens, and runners train for months "
        "to build the endurance to finish it."
    ),
    "Describe the view from a tall hill at sunset.": (
        "From the top of the hill the land spreads out below in folds of fields and trees, and the sky turns orange, "
        "pink and purple as the sun sinks toward the horizon. Long shadows stretch across the valley, windows in the "
        "distant town catch the last light, and the air grows cool and still."
    ),
    "How do you get started with baking cakes?": (
        "Begin with a simple recipe such as a vanilla sponge, and measure the flour, sugar, butter and eggs "
        "carefully, ideally with a kitchen scale. Preheat the oven, grease and line the tin, mix just until the "
        "batter is smooth, and bake until a skewer comes out clean. Let the cake cool before you ice it."
    ),
    "What do you think about learning to knit?": (
        "Learning to knit is a relaxing and rewarding hobby. You only need a pair of needles and some yarn, and you "
        "can start with the knit stitch on a simple scarf or dishcloth. It takes some patience at first, but it "
        "builds focus, calms the mind and leaves you with something useful you made yourself."
    ),
    "How does yeast make dough rise?": (
        "Yeast is a living fungus that feeds on the sugars in the flour. As it ferments them it releases carbon "
        "dioxide gas, and the stretchy gluten network in the kneaded dough traps the gas in small bubbles, so the "
        "dough swells. Warmth speeds the yeast up, and baking sets the bubbles into the bread's airy crumb."
    ),
    "What makes a good host at a dinner party?": (
        "A good host plans the food ahead so they can spend time with the guests, greets everyone warmly and "
        "introduces people who do not know each other. They keep drinks topped up, ask about dietary needs, steer "
        "the conversation so everyone feels included, and stay relaxed when something goes wrong."
    ),
    "What should I do to prepare for a job interview?": (
        "Research the company and the role, and think of examples from your experience that show the skills they "
        "ask for. Practise answers to common questions, prepare a few questions of your own, choose your clothes "
        "and route the day before, and arrive a little early with a copy of your CV."
    ),
    "Write a short song chorus about summer holidays.": (
        "Oh, summer holidays, the sun is on our side, windows down and the radio loud as we ride. Sandy feet and "
        "ice-cream dreams, long warm nights by the sea, summer holidays, it's just you and me."
    ),
    "How do I unblock a slow bathroom sink?": (
        "First pull out the stopper and remove the hair and soap scum caught underneath it. Then pour boiling water "
        "down the drain, or baking soda followed by vinegar, and use a plunger or a cheap drain snake to clear what "
        "is left. If it stays slow, unscrew and clean the U-shaped trap under the sink."
    ),
    "Explain how a sailboat can move against the wind.": (
        "A sail works like an aeroplane wing: wind flowing across its curved surface creates a force that is partly "
        "sideways and partly forward. The keel under the boat resists the sideways push, so the boat moves forward "
        "at an angle to the wind. By zigzagging, called tacking, it makes progress upwind."
    ),
    "Describe a grandmother's kitchen on a holiday morning.": (
        "The kitchen is warm and smells of cinnamon, coffee and something baking in the oven. Flour dusts the "
        "wooden table, pots bubble on the stove, and grandmother moves between them in her apron, handing out tastes "
        "to the grandchildren while the radio plays old songs by the frosty window."
    ),
    "What are good snacks to bring on a long hike?": (
        "Bring light, energy-dense snacks that will not spoil: trail mix with nuts and dried fruit, granola or "
        "protein bars, jerky, cheese, crackers and fresh fruit such as apples or oranges. A peanut butter sandwich "
        "works well too, and carry plenty of water or an electrolyte drink."
    ),
    "What is your favourite season, and why?": (
        "Autumn is a lovely season: the air turns crisp and cool, the leaves change to red and gold, and it is "
        "perfect weather for long walks. It also brings cosy evenings, warm drinks and harvest foods like apples and "
        "pumpkins."
    ),
    "How does a camera focus on its subject?": (
        "A camera focuses by moving its lens closer to or further from the sensor, so that light from the subject "
        "comes together in a sharp point on the sensor. Autofocus systems measure contrast or use phase-detection "
        "sensors to find the right lens position in a fraction of a second."
    ),
    "What makes an old town charming to visit?": (
        "Old towns charm visitors with their narrow cobbled streets, historic buildings and small squares that have "
        "grown over centuries. Local cafes, markets and family shops give them character, and walking through them "
        "feels like stepping back in time."
    ),
    "How can I make a small bedroom feel bigger?": (
        "Use light colours on the walls, let in as much natural light as you can, and hang a large mirror to reflect "
        "it. Choose furniture with legs or built-in storage, keep the floor clear of clutter, and use shelves high on "
        "the walls so the room feels open."
    ),
    "Write a short note to a friend who just moved away.": (
        "Dear friend, it already feels strange not having you just around the corner. I hope the move went well and "
        "that your new home is starting to feel like yours. I miss our chats, so call me soon, and I promise to "
        "visit as soon as I can. With love."
    ),
    "How do you skip a stone across a lake?": (
        "Find a flat, smooth, round stone about the size of your palm. Hold it between your thumb and middle finger, "
        "crouch low, and throw it side-arm so it spins and hits the water at a shallow angle of about twenty "
        "degrees. The spin and the low angle make it bounce across the surface."
    ),
    "Explain what a footnote in a book is for.": (
        "A footnote is a short note at the bottom of a page, marked by a small number in the text. It gives the "
        "source of a quote or fact, or adds an explanation or comment that would interrupt the main text, so "
        "readers can check or learn more without losing the thread."
    ),
    "Describe a snowy mountain village.": (
        "Wooden chalets with steep roofs sit under thick blankets of snow, smoke curls from their chimneys, and warm "
        "light glows in the windows. Narrow lanes wind between them to a small church, pine forests climb the slopes "
        "behind, and the only sounds are footsteps crunching in the snow."
    ),
    "What are the best things to do on the first warm day of spring?": (
        "Get outside: go for a walk or a bike ride in the park, have a picnic, or sit in a cafe terrace in the sun. "
        "It is also a good day to start planting the garden, open the windows to air out the house, and meet "
        "friends for a barbecue."
    ),
    "What do you think of trying a new recipe every week?": (
        "Trying a new recipe every week is a great habit. It keeps meals interesting, teaches new cooking skills and "
        "ingredients, and can become a fun weekly ritual with family or friends. Start with simple dishes and keep a "
        "list of the ones worth making again."
    ),
    "How does a paper airplane stay in the air?": (
        "A paper airplane glides because its wings push air downward as it moves forward, which creates lift. The "
        "throw gives it forward speed, gravity slowly pulls it down, and drag slows it. A good fold keeps the weight "
        "near the front and the wings balanced so it flies straight and level."
    ),
    "What makes a birthday party fun for young children?": (
        "Young children enjoy simple games like musical chairs and treasure hunts, bright decorations and balloons, "
        "a cake with candles to blow out, and small prizes or party bags. Keep the party short, plan a few "
        "activities, and let them run around and play with their friends."
    ),
    "How do I start a simple journal?": (
        "Get a notebook you like and choose a regular time, such as a few minutes before bed. Write the date and "
        "whatever comes to mind: what happened, how you feel, or three things you are grateful for. Keep it short "
        "and honest, and do not worry about spelling or style."
    ),
    "Write a short poem about a bicycle ride by the river.": (
        "Along the river, wheels turn slow, past willow trees where waters flow. The breeze is cool, the light is "
        "gold, the path runs on as stories told. I pedal home as evening falls, with river song and wild bird calls."
    ),
}
