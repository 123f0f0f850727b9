using System.Text.Json;
using System.Text.Json.Serialization;

namespace Marketplace.Silo.FrontDoor;

/// <summary>
/// Enums in request and response bodies as camelCase names. Reading accepts exactly one defined name (any case) and
/// nothing else: no numbers and no comma-separated combinations, which the framework's converter would turn into
/// some other defined value (<c>"published,retired"</c> is 3, retired).
/// </summary>
public sealed class StrictEnumConverterFactory : JsonConverterFactory
{
    /// <inheritdoc />
    public override bool CanConvert(Type typeToConvert) => typeToConvert.IsEnum;

    /// <inheritdoc />
    public override JsonConverter CreateConverter(Type typeToConvert, JsonSerializerOptions options) =>
        (JsonConverter)Activator.CreateInstance(typeof(StrictEnumConverter<>).MakeGenericType(typeToConvert))!;

    private sealed class StrictEnumConverter<T> : JsonConverter<T>
        where T : struct, Enum
    {
        private static readonly Dictionary<string, T> ByName = Enum.GetValues<T>()
            .ToDictionary(value => value.ToString(), value => value, StringComparer.OrdinalIgnoreCase);

        public override T Read(ref Utf8JsonReader reader, Type typeToConvert, JsonSerializerOptions options)
        {
            if (reader.TokenType == JsonTokenType.String && reader.GetString() is { } text && ByName.TryGetValue(text, out var value))
            {
                return value;
            }

            throw new JsonException($"Expected one of: {string.Join(", ", ByName.Keys.Select(Camel))}.");
        }

        public override void Write(Utf8JsonWriter writer, T value, JsonSerializerOptions options) => writer.WriteStringValue(Camel(value.ToString()));

        private static string Camel(string name) => char.ToLowerInvariant(name[0]) + name[1..];
    }
}
