using System.Globalization;
using System.Text.Json;
using System.Text.Json.Serialization;

namespace AttributionFleet.Worker.Store;

/// <summary>
/// Doubles in stored results and in the job API: a NaN or an infinity is written as JSON <c>null</c> (JSON has no NaN; a
/// client must never see a "NaN" string), and read back as NaN. The result's <c>status</c> (<c>non_finite</c>) says which
/// texts had them. Also reads the named literals ("NaN", "Infinity", "-Infinity") of rows written before.
/// Nullable doubles (thresholds) keep null as null: System.Text.Json handles their null before this converter.
/// </summary>
public sealed class NonFiniteAsNull : JsonConverter<double>
{
    public override bool HandleNull => true;

    public override double Read(ref Utf8JsonReader reader, Type typeToConvert, JsonSerializerOptions options) => reader.TokenType switch
    {
        JsonTokenType.Null => double.NaN,
        JsonTokenType.Number => reader.GetDouble(),
        JsonTokenType.String => reader.GetString() switch
        {
            "NaN" => double.NaN,
            "Infinity" => double.PositiveInfinity,
            "-Infinity" => double.NegativeInfinity,
            var s when double.TryParse(s, NumberStyles.Float, CultureInfo.InvariantCulture, out var d) => d,
            var s => throw new JsonException($"expected a number, got \"{s}\""),
        },
        _ => throw new JsonException($"expected a number, got {reader.TokenType}"),
    };

    public override void Write(Utf8JsonWriter writer, double value, JsonSerializerOptions options)
    {
        if (double.IsFinite(value)) writer.WriteNumberValue(value);
        else writer.WriteNullValue();
    }
}
