namespace AttributionFleet.Engine.Text;

/// <summary>What counts as an empty text: nothing but whitespace and NUL characters (a NUL-only text says nothing either).</summary>
public static class TextContent
{
    public static bool IsBlank(string? text)
    {
        if (text is null) return true;
        foreach (var c in text)
            if (!char.IsWhiteSpace(c) && c != '\0') return false;
        return true;
    }
}
